#!/usr/bin/env bash
# The domain-shift table: models trained on the sample's EOS/LYT/MON/NGS/PMO, scored on their own
# test split and on another laboratory's cells (../shared/data/pbc_dev, PBC: Acevedo et al. 2020)
# through the shipped class map, for each robustness option alone and together.
#
# Usage (from the repository root): docs/results/domain_shift/run_all.sh OUT_DIR [NAME...]
#   NAMEs: scratch_plain scratch_hed scratch_norm scratch_hednorm ft_plain ft_hed ft_norm
#   ft_hednorm (the trainings); with NAMEs only those are made (e.g. ones that failed).
# Then:   python docs/results/domain_shift/collect.py OUT_DIR > OUT_DIR/table.md
#
# Rows of the table (options): plain; hed (recipe.hed_jitter=0.05, Tellez's HED-light); norm
# (data.stain_norm=reinhard); adaptbn (the plain model, BatchNorm statistics re-estimated on the
# images scored: `evaluate --adapt-bn`); hednorm (both training options); all (hednorm + adapt).
# In-domain figures of the adapted rows adapt to the run's own test split the same way.
#
# Environment: PBC (default ../shared/data/pbc_dev), DATA (the Matek sample), WEIGHTS (the
# ImageNet MobileNetV2 for the fine-tuned rows), EXTRA (overrides added to every training, for a
# smoke test: EXTRA="trainer.max_epochs=1 trainer.limit_train_batches=2 data.image_size=48").
set -uo pipefail
OUT=${1:?give an output folder}; shift
ONLY=" $* "
mkdir -p "$OUT"
DATA=${DATA:-../shared/data/bm_sample/BM_cytomorphology_data}
PBC=${PBC:-../shared/data/pbc_dev}
WEIGHTS=${WEIGHTS:-../shared/weights/mobilenet_v2_imagenet_timm.pth}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
C5='data.classes=[EOS,LYT,MON,NGS,PMO]'
MAP=matek-pbc

log_cmd() {  # log_cmd LOG command...: run it, append command, output, rc and wall seconds
    local log=$1; shift
    echo "cmd: $*" >> "$log"
    local t0; t0=$(date +%s.%N)
    "$@" >> "$log" 2>&1
    local rc=$?
    echo "rc: $rc wall_s: $(echo "$(date +%s.%N) - $t0" | bc)" >> "$log"
    return $rc
}

run() {  # run NAME ADAPT(yes|no) CONFIG overrides...: train, then score in and out of domain
    local name=$1 adapt=$2; shift 2
    if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then return; fi
    local log="$OUT/$name.log" dir="$OUT/$name"
    { echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-}"; echo "start: $(date -u +%FT%TZ) $(uptime)"; } > "$log"
    log_cmd "$log" hemacnn train "$@" "$C5" "data.root=$DATA" "${EXTRA_ARGS[@]}" \
        --out "$dir" --no-progress || return
    # The end-of-training test (evaluation_test.json, with TTA as the configs ask) is the
    # in-domain figure; the same TTA on PBC.
    log_cmd "$log" hemacnn evaluate "$dir" --data "$PBC" --class-map "$MAP" --tta
    if [ "$adapt" = yes ]; then
        log_cmd "$log" hemacnn evaluate "$dir" --tta --adapt-bn
        log_cmd "$log" hemacnn evaluate "$dir" --data "$PBC" --class-map "$MAP" --tta --adapt-bn
    fi
    echo "end: $(date -u +%FT%TZ) $(uptime)" >> "$log"
}

for base in scratch ft; do
    if [ "$base" = scratch ]; then CFG=(configs/fast.yaml); else
        CFG=(configs/finetune_mnv2.yaml "model.weights=$WEIGHTS"); fi
    run "${base}_plain" yes "${CFG[@]}"
    run "${base}_hed" no "${CFG[@]}" recipe.hed_jitter=0.05
    run "${base}_norm" no "${CFG[@]}" data.stain_norm=reinhard
    run "${base}_hednorm" yes "${CFG[@]}" recipe.hed_jitter=0.05 data.stain_norm=reinhard
done
