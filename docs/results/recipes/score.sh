#!/usr/bin/env bash
# The evaluations behind section 7's seed and ensemble tables (from the repository root):
#   docs/results/recipes/score.sh runs RUN_DIR...          each run: test without TTA, and
#                                                          validation with TTA (to choose by)
#   docs/results/recipes/score.sh ensemble OUT RUN_DIR...  hemacnn ensemble of the runs, then
#                                                          its test with and without TTA and
#                                                          its validation with TTA
# The end-of-training test of each run (test_metrics.json) is already with TTA (test_tta).
set -euo pipefail
what=$1; shift
ev() { [ -f "$1/$2" ] || hemacnn evaluate "$1" "${@:3}" > /dev/null; }
case $what in
runs)
    for run in "$@"; do
        ev "$run" evaluation_test.json
        ev "$run" evaluation_val_tta.json --split val --tta
    done ;;
ensemble)
    out=$1; shift
    [ -f "$out/ensemble.json" ] || hemacnn ensemble "$@" --out "$out" --tta
    ev "$out" evaluation_test_tta.json --tta
    ev "$out" evaluation_test.json
    ev "$out" evaluation_val_tta.json --split val --tta ;;
*) echo "usage: score.sh runs RUN... | score.sh ensemble OUT RUN..." >&2; exit 2 ;;
esac
