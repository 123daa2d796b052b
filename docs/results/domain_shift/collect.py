"""The domain-shift table from the run folders of run_all.sh (their evaluation JSON files only).

Usage: python docs/results/domain_shift/collect.py OUT_DIR > OUT_DIR/table.md
Prints a Markdown table (one row per start x option) and writes OUT_DIR/summary.json. A row's
change is its mapped macro-F1 on PBC minus the plain model's (same start); "vs plain's half-width"
says whether that change is better or worse by more than the half-width of the plain model's
bootstrap interval, or within it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CLASSES = ["EOS", "LYT", "MON", "NGS", "PMO"]
# run folder suffix -> (option name without adaptation, option name with it)
OPTIONS = {"plain": ("plain", "adaptbn"), "hed": ("hed", None), "norm": ("norm", None),
           "hednorm": ("hednorm", "all")}
ORDER = ["plain", "hed", "norm", "adaptbn", "hednorm", "all"]


def _evaluations(run: Path) -> list[dict]:
    found = []
    for path in sorted(run.glob("evaluation_*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        data["_file"] = str(path)
        found.append(data)
    return found


def _pick(evals: list[dict], mapped: bool, adapted: bool) -> dict | None:
    for e in evals:
        if bool(e.get("class_map")) == mapped and bool(e.get("adapt_bn")) == adapted:
            if mapped or str(e.get("name", "")).startswith("test"):
                return e
    return None


def _ci(e: dict | None, key: str) -> str:
    if e is None:
        return "n/a"
    ci = (e.get("headline_ci") or {}).get(key)
    return f"{e[key]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _half(e: dict | None) -> float | None:
    ci = ((e or {}).get("headline_ci") or {}).get("macro_f1")
    return None if not ci else (ci[1] - ci[0]) / 2


def collect(out: Path) -> list[dict]:
    """One row per (start, option) with its in-domain and PBC figures."""
    rows = []
    for run in sorted(p for p in out.iterdir() if p.is_dir()):
        start, _, suffix = run.name.partition("_")
        if suffix not in OPTIONS:
            continue
        evals = _evaluations(run)
        for adapted, option in zip((False, True), OPTIONS[suffix], strict=True):
            if option is None:
                continue
            inside, pbc = _pick(evals, False, adapted), _pick(evals, True, adapted)
            if inside is None and pbc is None:
                continue
            rows.append({"start": start, "option": option, "run": str(run),
                         "in_domain": inside, "pbc": pbc})
    rows.sort(key=lambda r: (r["start"], ORDER.index(r["option"])))
    return rows


def table(rows: list[dict]) -> str:
    """The Markdown table."""
    head = ["start", "option", "in-domain macro F1 [95% CI]", "PBC mapped macro F1 [95% CI]",
            "PBC accuracy [95% CI]", "change vs plain", "vs plain's half-width",
            *[f"PBC F1 {c}" for c in CLASSES]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    plain = {r["start"]: r["pbc"] for r in rows if r["option"] == "plain"}
    for r in rows:
        base, pbc = plain.get(r["start"]), r["pbc"]
        change = beyond = ""
        if base is not None and pbc is not None and r["option"] != "plain":
            delta = pbc["macro_f1"] - base["macro_f1"]
            half = _half(base)
            change = f"{delta:+.3f}"
            beyond = "n/a" if half is None else (
                "better" if delta > half else "worse" if delta < -half else "within")
        per = [f"{(pbc or {}).get('per_class', {}).get(c, {}).get('f1') or 0:.3f}"
               if pbc else "n/a" for c in CLASSES]
        lines.append("| " + " | ".join([r["start"], r["option"], _ci(r["in_domain"], "macro_f1"),
                                         _ci(pbc, "macro_f1"), _ci(pbc, "accuracy"), change,
                                         beyond, *per]) + " |")
    left = next((r["pbc"]["class_map"].get("left_out_counts") for r in rows if r["pbc"]), None)
    if left:
        lines += ["", "Left out of PBC (no counterpart among the model's classes): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(left.items())) + "."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the table; write summary.json beside the runs."""
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: collect.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    rows = collect(out)
    if not rows:
        print(f"error: no run folders with evaluations in {out}", file=sys.stderr)
        return 1
    keep = ("macro_f1", "accuracy", "headline_ci", "n", "_file")
    summary = [{**{k: r[k] for k in ("start", "option", "run")},
                **{side: ({k: r[side].get(k) for k in keep} if r[side] else None)
                   for side in ("in_domain", "pbc")}} for r in rows]
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
