"""The cpu-profile runs of MV3 with the paper's Gaussian noise (std 1), kept when the profiles
moved to std 0.1: python docs/results/probes/noise1_seeds/table.py

One row per run (3 seeds of each noise point of lr_noise, regularization and architectures, as
`hemacnn sweep ... --profile cpu` trained them on 2026-12-01): the last epoch's training and
validation accuracy (metrics.csv), and on the test split the macro-F1, the majority-class
baseline's and the classes the run predicts (test_metrics.json).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


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
    return (f"| {run.parent.name} | {run.name} | {last['epoch']} | {float(last['train_acc']):.3f} | "
            f"{float(last['val_acc']):.3f} | {test['macro_f1']:.3f} | {baseline:.3f} | "
            f"{' '.join(predicted)} |")


if __name__ == "__main__":
    print("| study | run | epochs | train acc | val acc | test macro-F1 | majority class's "
          "| classes predicted on test |")
    print("|---|---|---|---|---|---|---|---|")
    for run in sorted(p.parent for p in HERE.glob("*/*/metrics.csv")):
        print(row(run))
