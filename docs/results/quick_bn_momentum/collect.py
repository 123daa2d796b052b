"""Copy each quick.yaml run's small files here and print the table of README.md.

    python docs/results/quick_bn_momentum/collect.py RUN_DIR ...

Per run folder: config.yaml, metrics.csv and test_metrics.json go to runs/<folder name>/ (no
checkpoints); the table row gives bn_momentum, seed, epochs trained, the best epoch (lowest
validation loss, the checkpoint that was tested) and the test macro-F1 with its bootstrap
95% interval.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
FILES = ("config.yaml", "metrics.csv", "test_metrics.json")


def main(runs: list[str]) -> None:
    print("| run | bn_momentum | seed | epochs | best epoch | test macro-F1 [95% CI] | "
          "test accuracy |")
    print("|---|---|---|---|---|---|---|")
    for run in map(Path, runs):
        missing = [f for f in FILES if not (run / f).is_file()]
        if missing:
            raise SystemExit(f"error: {run} is not a finished run (no {missing[0]})")
        keep = HERE / "runs" / run.name
        keep.mkdir(parents=True, exist_ok=True)
        for f in FILES:
            shutil.copy(run / f, keep / f)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        test = json.loads((run / "test_metrics.json").read_text())
        with (run / "metrics.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        best = min(rows, key=lambda r: float(r["val_loss"]))["epoch"]  # counted from 1
        lo, hi = test["headline_ci"]["macro_f1"]
        print(f"| {run.name} | {cfg['model']['bn_momentum']} | {cfg['seed']} | {len(rows)} | "
              f"{best} | {test['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}] | {test['accuracy']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
