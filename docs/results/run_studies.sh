#!/usr/bin/env bash
# Re-run studies' cpu profiles on the shared sample and copy what `hemacnn sweep` wrote into
# docs/results/<study>/ with RUN.md (exact command, wall and CPU time, load average).
# Usage (from the repository root): docs/results/run_studies.sh WORK_DIR STUDY...
#   e.g. docs/results/run_studies.sh /tmp/studies optimizers input_size balancing
# Two such lanes were run side by side with OMP_NUM_THREADS=1 each (one core per lane).
# WORKERS=N passes --workers N (points trained at once, each with OMP_NUM_THREADS threads).
set -uo pipefail
WORK=${1:?give a work folder}; shift
DATA=../shared/data/bm_sample/BM_cytomorphology_data
mkdir -p "$WORK"
for study in "$@"; do
    out="$WORK/$study"
    cmd="hemacnn sweep configs/studies/$study.yaml --profile cpu --out $out --no-progress${WORKERS:+ --workers $WORKERS} data.root=$DATA"
    start="$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
    t0=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$WORK/$study.cpu" $cmd > "$WORK/$study.log" 2>&1
    rc=$?
    wall=$(printf '%.0f' "$(echo "$(date +%s.%N) - $t0" | bc)")
    end="$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
    read -r user sys < "$WORK/$study.cpu"
    dest=docs/results/$study
    if [ "$rc" -ne 0 ]; then echo "$study failed (rc $rc): see $WORK/$study.log"; continue; fi
    rm -rf "$dest/figures" "$dest/report_files"
    mkdir -p "$dest"
    cp "$out/summary.md" "$out/summary.csv" "$out/summary_seeds.csv" "$dest/"
    [ -f "$out/claims.csv" ] && cp "$out/claims.csv" "$dest/"
    # The runs' small raw files and study.json: `hemacnn sweep --report $dest` re-derives
    # summary.md, the tables and the figures from the repository alone.
    python -c 'import sys; from hemacnn.studies.summary import copy_raw_files as c; c(*sys.argv[1:])' \
        "$out" "$dest"
    cp -r "$out/figures" "$dest/"
    [ -f "$out/report.md" ] && cp "$out/report.md" "$dest/" && cp -r "$out/report_files" "$dest/" 2>/dev/null
    cat > "$dest/RUN.md" <<MD
# How these results were made

    cd <repository> && OMP_NUM_THREADS=${OMP_NUM_THREADS:-} $cmd

Wall time: **${wall} s** ($(echo "scale=1; $wall / 60" | bc) min); CPU time ${user} s user +
${sys} s system. Run on the project's 2-core machine with one thread
(OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}, ${WORKERS:-1} worker(s)) ${LOAD_NOTE:-while one other study lane used the other core.}
Start ${start}; end ${end} (1-, 5-, 15-minute load averages).

summary.md, summary.csv, summary_seeds.csv, claims.csv and figures/ are the files \`hemacnn
sweep\` wrote, copied unchanged by \`docs/results/run_studies.sh\` with study.json and each run's
raw files (runs/<run>/: config.yaml, metrics.csv, step_loss.csv, test_metrics.json, env.json);
\`hemacnn sweep --report docs/results/<study>\` re-derives the summary and figures from them.
MD
    echo "$study: rc $rc, ${wall} s"
done
