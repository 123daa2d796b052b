"""Study runs kept when a cpu profile moved on: python docs/results/probes/seeds_table.py FOLDER

FOLDER/<study>/<run>/ holds the raw files `hemacnn sweep ... --profile cpu` wrote (noise1_seeds:
MV3 with the paper's noise std 1; adadelta_lr0.1_seeds: Adadelta at the paper's lr 0.1). One row
per run: the last epoch's training and validation accuracy (metrics.csv), the final training
loss (mean of the last 10 mini-batches, as the optimizer study's summary, where step_loss.csv
exists), and on the test split the macro-F1, the majority-class baseline's and the classes the
run predicts (test_metrics.json).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from hemacnn.studies.summary import run_metrics


def row(run: Path) -> str:
    with (run / "metrics.csv").open(newline="") as f:
        last = list(csv.DictReader(f))[-1]
    # The study summary's own figures (final loss, macro-F1, the majority-class baseline).
    m = run_metrics(run, {"final_steps": 10})
    final = f"{m['final_train_loss']:.3f}" if m.get("steps") else ""  # step losses only
    per = json.loads((run / "test_metrics.json").read_text())["per_class"]
    predicted = [c for c, v in per.items() if v["predicted"]]
    return (f"| {run.parent.name} | {run.name} | {last['epoch']} | "
            f"{float(last['train_acc']):.3f} | {final} | {float(last['val_acc']):.3f} | "
            f"{m['test_macro_f1']:.3f} | {m['baseline_macro_f1']:.3f} | {' '.join(predicted)} |")

if __name__ == "__main__":
    if len(sys.argv) != 2 or not list(Path(sys.argv[1]).glob("*/*/metrics.csv")):
        sys.exit("error: give one folder of kept study runs (FOLDER/<study>/<run>/metrics.csv)")
    print("| study | run | epochs | train acc | final train loss | val acc | test macro-F1 "
          "| majority class's | classes predicted on test |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in sorted(p.parent for p in Path(sys.argv[1]).glob("*/*/metrics.csv")):
        print(row(run))
