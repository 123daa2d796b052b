"""The claim table of docs/results/README.md, generated from the studies' own files.

    python docs/results/claims_table.py docs/results/<study> ...
    python docs/results/claims_table.py --list VERDICT docs/results/<study> ...

For each study folder: its claims.csv (the verdicts `hemacnn sweep` computed with the rule of
hemacnn.studies.verdicts: one row per claim, and for a claim with `rows: each` one more per
comparison, its id `claim:comparison`) and its summary_seeds.csv (which runs are degenerate). A
shared point's runs (`shared_from`: another study's) are counted in that study only. A folder
without claims.csv is listed as such. `--list VERDICT` prints instead one line per claim row with
that verdict (the README's lists of decided claims). Prints Markdown; nothing here is typed in by
hand.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} {v}" for v, n in sorted(counter.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("studies", nargs="+", type=Path, help="study folders under docs/results")
    p.add_argument("--list", metavar="VERDICT", help="only list the claim rows with this verdict")
    args = p.parse_args()
    if args.list:
        listed = [f"- `{c['id']}` ([{s.name}]({s.name}/summary.md), {c['section']}): "
                  f"**{c['verdict']}**. The paper: {c['claim']}. Ours: {c['detail']}."
                  for s in args.studies if (s / "claims.csv").is_file()
                  for c in _rows(s / "claims.csv") if c["verdict"] == args.list]
        print("\n".join(listed) if listed else f"(no claim row is {args.list})")
        return
    lines = ["| study | claim | section | the paper's claim | verdict | seeds | our figures "
             "| run with | the paper's setting |", "|---|---|---|---|---|---|---|---|---|"]
    claims: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    runs = degenerate = 0
    missing = []
    for study in args.studies:
        seeds_csv = study / "summary_seeds.csv"
        if seeds_csv.is_file():
            own = [r for r in _rows(seeds_csv) if not r.get("shared_from")]
            runs += len(own)
            degenerate += sum(int(r.get("degenerate") or 0) for r in own)
        if not (study / "claims.csv").is_file():
            missing.append(study.name)
            continue
        for c in _rows(study / "claims.csv"):
            (parts if ":" in c["id"] else claims)[c["verdict"]] += 1
            lines.append(f"| [{study.name}]({study.name}/summary.md) | `{c['id']}` | "
                         f"{c['section']} | {c['claim']} | **{c['verdict']}** | {c['seeds']} | "
                         f"{c['detail']} | {c.get('setting_run', '')} | "
                         f"{c.get('setting_paper', '')} |")
    lines.append("")
    lines.append(f"Claims: {sum(claims.values())} ({_counts(claims)}); their comparisons' own "
                 f"rows: {sum(parts.values())} ({_counts(parts)}).")
    if runs:
        lines.append(f"Runs: {runs} (a shared point's runs counted once, in their own study); "
                     f"degenerate on the scored checkpoint's test predictions: {degenerate} "
                     f"({degenerate / runs:.0%}).")
    if missing:
        lines.append("Not re-run with seeds yet (no computed verdicts): " + ", ".join(missing)
                     + ".")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
