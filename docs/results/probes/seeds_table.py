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


def row(run: Path) -> str:
    with (run / "metrics.csv").open(newline="") as f:
        last = list(csv.DictReader(f))[-1]
    test = json.loads((run / "test_metrics.json").read_text())
    counts = test["confusion_matrix"]["counts"]
    labels = test["confusion_matrix"]["labels"]
    predicted = [labels[j] for j in range(len(labels)) if sum(r[j] for r in counts)]
    n = sum(map(sum, counts))
    majority = max(map(sum, counts)) / n  # accuracy of always answering the largest class
    k = len(labels)
    baseline = 2 * majority / (1 + majority) / k  # that answer's macro-F1
    final = ""
    if (run / "step_loss.csv").is_file():
        with (run / "step_loss.csv").open(newline="") as f:
            losses = [float(r["loss"]) for r in csv.DictReader(f)][-10:]
        final = f"{sum(losses) / len(losses):.3f}"
    return (f"| {run.parent.name} | {run.name} | {last['epoch']} | "
            f"{float(last['train_acc']):.3f} | {final} | {float(last['val_acc']):.3f} | "
            f"{test['macro_f1']:.3f} | {baseline:.3f} | {' '.join(predicted)} |")


if __name__ == "__main__":
    print("| study | run | epochs | train acc | final train loss | val acc | test macro-F1 "
          "| majority class's | classes predicted on test |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in sorted(p.parent for p in Path(sys.argv[1]).glob("*/*/metrics.csv")):
        print(row(run))
