"""Rows for the tuning attempts of section 6: the end-of-training test (test_metrics.json, with
the config's TTA), or for runs whose end-of-training test did not run, the test scored
afterwards by `hemacnn evaluate RUN --tta` (evaluation_test_tta.json).

Usage: python docs/results/recipes/attempts.py docs/results/recipes/runs/NAME...
Prints one Markdown row per run: its overrides (from NAME.log's command line), validation
accuracy of the last epoch (metrics.csv), test macro-F1 with its 95% bootstrap interval.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def row(run: Path) -> str:
    cmd = next(line for line in Path(f"{run}.log").read_text().splitlines()
               if line.startswith("cmd: "))
    overrides = [w for w in cmd.split() if "=" in w and not w.startswith(("data.root=",
                                                                          "model.weights="))]
    with open(run / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    scored = run / "test_metrics.json"
    ev = json.loads((scored if scored.is_file() else run / "evaluation_test_tta.json").read_text())
    lo, hi = ev["headline_ci"]["macro_f1"]
    return (f"| {run.name} | {' '.join(overrides) or '(as shipped)'} | {last['epoch']} | "
            f"{float(last['val_acc']):.3f} | {ev['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}] |")


if __name__ == "__main__":
    print("| run | overrides of finetune.yaml | epochs | last val accuracy "
          "| test macro-F1 [95% CI] |")
    print("|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        print(row(Path(arg)))
