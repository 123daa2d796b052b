#!/usr/bin/env bash
# The adapted run used as any run, on the real cells: the parent's colour warning on PBC cells,
# `hemacnn adapt` on 25 labelled cells per class (curve draw k=25, seed 0), the adapted run's
# predict (no colour warning: its card's colours are PBC's), export, predict and evaluate through
# the ONNX export, and evaluate on the parent's test split.
# Usage (from the repository root): docs/results/adaptation/real_loop.sh PARENT CURVE_OUT OUT
set -euo pipefail
P=$1; W=$2/work/curve_k25_s0; O=$3
mkdir -p "$O"
KEEP='strict:|colour|wrote|adapt|in-domain|classified|run folder|macro-F1|mapped|error'
run() {  # the command, the lines of its output that matter here, its wall time
    echo "\$ hemacnn $*"
    local t0; t0=$(date +%s.%N)
    "${PYTHON:-python}" -m hemacnn.cli "$@" 2>&1 | grep -E "$KEEP" || true
    echo "(wall $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-6) s)"; echo
}
echo "start: $(date -u +%FT%TZ) $(uptime)"; echo
run predict "$P" "$W/held/monocyte" --out "$O/parent_monocyte.csv"
run adapt "$P" --labels "$W/labels" --class-map matek-pbc --out "$O/adapted" --domain PBC --no-progress
run predict "$O/adapted" "$W/held/monocyte" --out "$O/adapted_monocyte.csv"
run export "$O/adapted"
run predict "$O/adapted" "$W/held/monocyte" --out "$O/adapted_monocyte_onnx.csv"
run evaluate "$O/adapted" --data "$W/held" --class-map matek-pbc
run evaluate "$O/adapted"
echo "end: $(date -u +%FT%TZ) $(uptime)"
