#!/usr/bin/env bash
# The runs behind the recipe table (README.md here), in the order they were queued.
# Usage: docs/results/recipes/run_all.sh OUT_DIR [NAME...]   (from the repository root)
# With NAMEs only those runs are made (e.g. the rows missing from a table).
# Each run leaves OUT_DIR/NAME (a run folder) and OUT_DIR/NAME.log (command, load average at
# start and end, wall seconds); then:
#   python docs/results/recipes/collect.py OUT_DIR/* > table.md
# On a machine shared with other jobs, OMP_NUM_THREADS=1 per run was 4x faster than 2 threads
# (measured: 8.9 vs 2.3 img/s at load average 17 on 2 cores); the table's runs used it.
set -uo pipefail
OUT=${1:?give an output folder}; shift
ONLY=" $* "
mkdir -p "$OUT"
DATA=../shared/data/bm_sample/BM_cytomorphology_data
C8='data.classes=[ART,BLA,EOS,LYT,MON,NGS,NIF,PMO]'

run() {  # run NAME CONFIG overrides...
    local name=$1; shift
    if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then return; fi
    local log="$OUT/$name.log"
    { echo "cmd: hemacnn train $* data.root=$DATA --out $OUT/$name --no-progress"
      echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-}"
      echo "start: $(date -u +%FT%TZ) $(uptime)"; } > "$log"
    local t0; t0=$(date +%s.%N)
    /usr/bin/time -v hemacnn train "$@" "data.root=$DATA" --out "$OUT/$name" --no-progress \
        >> "$log" 2>&1
    local rc=$?
    { echo "end: $(date -u +%FT%TZ) $(uptime)"
      echo "rc: $rc wall_s: $(echo "$(date +%s.%N) - $t0" | bc)"; } >> "$log"
}

# The acceptance runs: fast.yaml on 8 classes, on BLA/LYT/NGS, and BLA/LYT/NGS + OTHER.
run fast8 configs/fast.yaml "$C8"
run fast3 configs/fast.yaml "data.classes=[BLA,LYT,NGS]"
# (Section 4's fast3_other row was made with the earlier fast.yaml, timm/resnet18 at 96 px,
#  shortened to 64 px and 12 epochs; the OTHER section's second table is this row as it
#  stands, run into /work/runs10.)
run fast3_other configs/fast.yaml "data.classes=[BLA,LYT,NGS]" imbalance.other=true
# The same with the class-balanced sampler (OTHER holds 59% of the images).
run fast3_other_bal configs/fast.yaml "data.classes=[BLA,LYT,NGS]" imbalance.other=true \
    imbalance.sampler=balanced

# Ablation on the same 8-class split (seed 0): timm/resnet18 at 64 px for 8 epochs, batch 64,
# without the stain jitter, crops and TTA that fast.yaml now has, pinned here so the rows do
# not change when fast.yaml does.
A=(data.image_size=64 trainer.max_epochs=8 model.name=timm/resnet18 data.batch_size=64
   recipe.stain_jitter=0 recipe.crop_scale=null recipe.test_tta=false)
PAPER=(data.augment=false optimizer.name=adam optimizer.lr=0.001 optimizer.weight_decay=0
       recipe.schedule=none recipe.label_smoothing=0)
run abl_paper configs/fast.yaml "$C8" "${A[@]}" "${PAPER[@]}"
run abl_std configs/fast.yaml "$C8" "${A[@]}"
run abl_std_ema configs/fast.yaml "$C8" "${A[@]}" recipe.ema_decay=0.99
run abl_std_bal configs/fast.yaml "$C8" "${A[@]}" imbalance.sampler=balanced
run abl_std_stain configs/fast.yaml "$C8" "${A[@]}" recipe.stain_jitter=0.1 recipe.crop_scale=0.7
run abl_std_mix configs/fast.yaml "$C8" "${A[@]}" recipe.mixup_alpha=0.2 recipe.cutmix_alpha=1.0
run abl_paper_aug configs/fast.yaml "$C8" "${A[@]}" "${PAPER[@]}" data.augment=true
run abl_std_nols configs/fast.yaml "$C8" "${A[@]}" recipe.label_smoothing=0

# Is fast.yaml's ceiling time, resolution or data? (8 classes, seed 0, same split as fast8.)
# Three times the training (72 epochs, ~27 min on 2 cores):
run lim_long configs/fast.yaml "$C8" trainer.max_epochs=72
# Full 224 px (the images are 250 px), growing from 112 px over the first 16 epochs:
run lim_224 configs/fast.yaml "$C8" data.image_size=224 "recipe.progressive=[112,16]"
# BLA/LYT/NGS with three times the training:
run lim_long3 configs/fast.yaml "data.classes=[BLA,LYT,NGS]" trainer.max_epochs=72
# A learning curve (data.train_fraction): half and a quarter of each class's training images,
# validation and test unchanged, the same number of steps as fast8 (epochs x2, x4):
run lc_50 configs/fast.yaml "$C8" data.train_fraction=0.5 trainer.max_epochs=48
run lc_25 configs/fast.yaml "$C8" data.train_fraction=0.25 trainer.max_epochs=96

# Section 6: fine-tuning the shared ImageNet MobileNetV2 (configs/finetune.yaml; 8 epochs, 128 px)
W=model.weights=../shared/weights/mobilenet_v2_imagenet_timm.pth
run ft8 configs/finetune.yaml "$W"
run ft8_e10 configs/finetune.yaml "$W" trainer.max_epochs=10   # alone on the idle machine
run ft3 configs/finetune.yaml "$W" "data.classes=[BLA,LYT,NGS]"
run ft8_scratch configs/finetune.yaml                       # the same network and time, no weights
run ft8_nobn configs/finetune.yaml "$W" model.bn_reestimate=false  # folded BatchNorm left as is
# The learning curve with the same number of optimizer steps (epochs x2, x4), as lc_50/lc_25:
run ft8_lc50 configs/finetune.yaml "$W" data.train_fraction=0.5 trainer.max_epochs=16
run ft8_lc25 configs/finetune.yaml "$W" data.train_fraction=0.25 trainer.max_epochs=32
