#!/bin/bash
# before (1b64f8e, /work/wt-base) and after (main) on the same machine: the same train command,
# then predict --precision fp32 on the test split's files.
S=/work/shared/data/bm_sample/BM_cytomorphology_data
for side in before after; do
  if [ $side = before ]; then SRC=/work/wt-base/src; CFG=/work/wt-base/configs/quick.yaml; else SRC=/work/main/src; CFG=/work/main/configs/quick.yaml; fi
  rm -rf /tmp/ba/$side; mkdir -p /tmp/ba/$side
  export HEMACNN_CACHE=/tmp/ba/$side/cache
  ( cd /tmp/ba/$side && PYTHONPATH=$SRC /usr/bin/time -f "%e s" /work/main/.venv/bin/python -m hemacnn.cli train $CFG data.root=$S "data.classes=[BLA,LYT,NGS]" data.image_size=48 trainer.max_epochs=2 --out run --no-progress > train.log 2>&1 )
  cut -d, -f2 run/splits/test.csv 2>/dev/null | head -1
  ( cd /tmp/ba/$side && tail -n +2 run/splits/test.csv | cut -d, -f1 | sed "s|^|$S/|" > files.txt && PYTHONPATH=$SRC /work/main/.venv/bin/python -m hemacnn.cli predict run $(cat files.txt) --precision fp32 --out pred.csv > predict.log 2>&1 )
done
