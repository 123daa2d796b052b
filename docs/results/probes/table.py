"""The probes' table: python docs/results/probes/table.py docs/results/probes/*/

One row per probe run: its overrides (env.json's command), its seed and the epochs it ran (a
probe stopped by hand has fewer than it asked for; both from config.yaml), the last epoch's
training loss and accuracy and validation accuracy (metrics.csv), and, where it finished, its
test macro-F1 and how many classes it predicted on test (test_metrics.json).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import yaml


def row(run: Path) -> str:
    cmd = json.loads((run / "env.json").read_text())["command"].split()
    overrides = [w for w in cmd if "=" in w and not w.startswith(("data.root=", "data.classes="))]
    config = yaml.safe_load((run / "config.yaml").read_text())
    asked = config["trainer"]["max_epochs"]
    with (run / "metrics.csv").open(newline="") as f:
        last = list(csv.DictReader(f))[-1]
    test = run / "test_metrics.json"
    f1 = predicted = "stopped"
    if test.is_file():
        metrics = json.loads(test.read_text())
        f1 = f"{metrics['macro_f1']:.3f}"
        predicted = str(sum(1 for v in metrics["per_class"].values() if v["predicted"]))
    return (f"| {run.name} | `{cmd[2]}` {' '.join(overrides)} | {config['seed']} | "
            f"{last['epoch']} of {asked} | {float(last['train_loss']):.3f} | "
            f"{float(last['train_acc']):.3f} | {float(last['val_acc']):.3f} | {f1} | {predicted} |")


if __name__ == "__main__":
    print("| probe | config and overrides | seed | epochs | train loss | train acc | val acc "
          "| test macro-F1 | classes predicted on test |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        if (Path(arg) / "env.json").is_file():  # a run folder (not a folder of kept study runs)
            print(row(Path(arg)))
