"""The probes' table: python docs/results/probes/table.py docs/results/probes/*/

One row per probe run: its overrides (env.json's command), the epochs it ran (a probe stopped
by hand has fewer than it asked for), the last epoch's training loss and accuracy and
validation accuracy (metrics.csv), and its test macro-F1 where it finished.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def row(run: Path) -> str:
    cmd = json.loads((run / "env.json").read_text())["command"].split()
    overrides = [w for w in cmd if "=" in w and not w.startswith(("data.root=", "data.classes="))]
    asked = next((w.split("=")[1] for w in cmd if w.startswith("trainer.max_epochs=")), "?")
    with (run / "metrics.csv").open(newline="") as f:
        last = list(csv.DictReader(f))[-1]
    test = run / "test_metrics.json"
    f1 = f"{json.loads(test.read_text())['macro_f1']:.3f}" if test.is_file() else "stopped"
    return (f"| {run.name} | `{cmd[2]}` {' '.join(overrides)} | {last['epoch']} of {asked} | "
            f"{float(last['train_loss']):.3f} | {float(last['train_acc']):.3f} | "
            f"{float(last['val_acc']):.3f} | {f1} |")


if __name__ == "__main__":
    print("| probe | config and overrides | epochs | train loss | train acc | val acc "
          "| test macro-F1 |")
    print("|---|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        print(row(Path(arg)))
