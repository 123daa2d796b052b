"""A study's points as a table of mean ± 95% half-width over seeds, from its summary.csv:

    python docs/results/point_table.py docs/results/optimizers final_train_loss mean_train_loss \
        test_macro_f1 degenerate_seeds

Each column is a summary.csv column: a metric prints as mean ± its `_ci95` (3 decimals), any other
column (a setting, `degenerate_seeds`) as written. The tables in docs/results/README.md come from
this script, not from typing.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def cell(row: dict[str, str], column: str) -> str:
    value = row[column]
    half = row.get(f"{column}_ci95", "")
    if value == "" or half == "":
        return value
    return f"{float(value):.3f} ± {float(half):.3f}"


def main(study: Path, columns: list[str]) -> None:
    if not (study / "summary.csv").is_file():
        sys.exit(f"error: {study / 'summary.csv'} not found; give a study folder of docs/results")
    with (study / "summary.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        sys.exit(f"error: {study / 'summary.csv'} has no column {missing[0]!r}")
    print("| point | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for row in rows:
        print(f"| {row['point']} | " + " | ".join(cell(row, c) for c in columns) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2:])
