#!/bin/bash
# Idle measurements for issue 21, this session: one-image predict and evaluate --data, from the
# checkpoint and through a fresh ONNX export (a copy of q128; q128 itself untouched).
cd /work/main
PY=/work/main/.venv/bin/python
DATA=../shared/data/bm_sample/BM_cytomorphology_data
OUT=/work/scratch/idle21
rm -rf $OUT /tmp/q21 && mkdir -p $OUT && cp -r /work/scratch/q128 /tmp/q21 && rm -rf /tmp/q21/export
echo "start $(date -u +%FT%TZ) $(uptime)" | tee $OUT/log.txt
PYTHONPATH=/work/main/src $PY benchmarks/bench_predict.py --sample $DATA --run /tmp/q21 --startup-only --json $OUT/startup.json 2>&1 | tail -8 | tee -a $OUT/log.txt
for mode in checkpoint onnx; do
  if [ $mode = onnx ]; then PYTHONPATH=/work/main/src $PY -m hemacnn.cli export /tmp/q21 > /dev/null; fi
  for i in 1 2 3; do
    rm -rf /tmp/ev-$mode
    /usr/bin/time -f "$mode evaluate-data wall %e s" env PYTHONPATH=/work/main/src $PY -m hemacnn.cli evaluate /tmp/q21 --data $DATA --out /tmp/ev-$mode 2>&1 | grep -E "wall" | tee -a $OUT/log.txt
  done
  cp /tmp/ev-$mode/evaluation_data-*.json $OUT/evaluation_$mode.json
done
echo "end $(date -u +%FT%TZ) $(uptime)" | tee -a $OUT/log.txt
