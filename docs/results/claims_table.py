"""The claim table of docs/results/README.md, generated from the studies' own files.

    python docs/results/claims_table.py docs/results/<study> ...

For each study folder: its claims.csv (the verdicts `hemacnn sweep` computed with the rule of
hemacnn.studies.verdicts) and its summary_seeds.csv (which runs are degenerate). A folder
without claims.csv (a study not re-run with seeds since the verdicts were added) is listed as
such. Prints Markdown; nothing here is typed in by hand.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("studies", nargs="+", type=Path, help="study folders under docs/results")
    args = p.parse_args()
    lines = ["| study | section | the paper's claim | verdict | seeds | our figures |",
             "|---|---|---|---|---|---|"]
    verdicts: Counter[str] = Counter()
    runs = degenerate = 0
    missing = []
    for study in args.studies:
        seeds_csv = study / "summary_seeds.csv"
        if seeds_csv.is_file():
            rows = _rows(seeds_csv)
            runs += len(rows)
            degenerate += sum(int(r.get("degenerate") or 0) for r in rows)
        if not (study / "claims.csv").is_file():
            missing.append(study.name)
            continue
        for c in _rows(study / "claims.csv"):
            verdicts[c["verdict"]] += 1
            lines.append(f"| [{study.name}]({study.name}/summary.md) | {c['section']} | "
                         f"{c['claim']} | **{c['verdict']}** | {c['seeds']} | {c['detail']} |")
    lines.append("")
    if runs:
        lines.append("Verdicts: " + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
                     + f"; degenerate runs: {degenerate} of {runs} ({degenerate / runs:.0%}).")
    if missing:
        lines.append("Not re-run with seeds yet (no computed verdicts): " + ", ".join(missing)
                     + ".")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
