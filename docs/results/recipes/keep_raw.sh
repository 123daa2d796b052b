#!/usr/bin/env bash
# Copy the small raw files of finished run folders (no checkpoints) beside this table, so the
# rows can be re-derived from the repository: keep_raw.sh RUN_DIR...   (from the repository root)
# DEST=docs/results/domain_shift/runs keep_raw.sh ... copies beside another table.
set -euo pipefail
dest=${DEST:-docs/results/recipes/runs}
for run in "$@"; do
    name=$(basename "$run")
    mkdir -p "$dest/$name"
    for f in config.yaml metrics.csv step_loss.csv test_metrics.json env.json model_card.json \
             ensemble.json ensemble_members.json; do  # the last two: an ensemble folder
        [ -f "$run/$f" ] && cp "$run/$f" "$dest/$name/"
    done
    for f in "$run"/evaluation_*.json; do  # later evaluations (other data, TTA, adaptation)
        [ -f "$f" ] && cp "$f" "$dest/$name/"
    done
    if [ -f "$run/splits/splits.json" ]; then  # counts
        mkdir -p "$dest/$name/splits" && cp "$run/splits/splits.json" "$dest/$name/splits/"
    fi
    [ -f "$run.log" ] && cp "$run.log" "$dest/$name.log"  # the launcher's log: command, load, time -v
done
