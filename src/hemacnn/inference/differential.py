"""The differential count: a batch of cells read as one patient's marrow.

Counts and percentages per class with 95% Wilson score intervals (the same interval the
evaluation uses for per-class rates), the share flagged for review, blasts first because the
blast percentage is the number a haematologist reads first. The JSON and the printout carry the
notes in :data:`RESEARCH_NOTE` and, when the model knows blasts, :data:`WHO_NOTE`; the CSV is
the bare table (one row per class).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hemacnn.atomic import atomic_open, write_json
from hemacnn.classes import class_name
from hemacnn.scoring.metrics import wilson_interval

RESEARCH_NOTE = ("Research use only: a model's differential is not a diagnosis; a qualified "
                 "person must review the cells.")
WHO_NOTE = ("A blast share of 20% or more is the WHO threshold for acute leukaemia; confirm "
            "any such count by manual review.")
FIRST = ("BLA",)  # shown first, in this order


def differential(labels: Sequence[str], classes: Sequence[str],
                 review: Sequence[bool] | None = None) -> dict[str, Any]:
    """Count, percentage and 95% interval per class for the predicted ``labels`` of one batch."""
    n = len(labels)
    order = [c for c in FIRST if c in classes] + [c for c in classes if c not in FIRST]
    rows = []
    for code in order:
        k = sum(1 for label in labels if label == code)
        ci = wilson_interval(k, n)
        rows.append({"class": code, "name": class_name(code), "count": k,
                     "percent": round(100.0 * k / n, 4) if n else None,
                     "ci95_low": round(100.0 * ci[0], 4) if ci else None,
                     "ci95_high": round(100.0 * ci[1], 4) if ci else None})
    flagged = sum(bool(r) for r in review) if review is not None else 0
    notes = [RESEARCH_NOTE] + ([WHO_NOTE] if "BLA" in classes else [])
    return {"n_cells": n, "rows": rows, "review_count": flagged,
            "review_percent": 100.0 * flagged / n if n else None,
            "ci_method": "wilson", "notes": notes}


def from_predictions(preds: Sequence[Any], classes: Sequence[str]) -> dict[str, Any]:
    """The differential of :class:`hemacnn.inference.predict.Prediction` results (each with
    ``code`` and ``review``); files that could not be classified (no code) are left out."""
    done = [p for p in preds if p.code]
    return differential([p.code for p in done], classes, [bool(p.review) for p in done])


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def format_differential(d: dict[str, Any]) -> str:
    """The differential as a printed table with its notes."""
    lines = [f"Differential count of {d['n_cells']} cells (95% Wilson intervals)", "",
             f"{'class':<6}{'name':<26}{'count':>7}{'%':>8}{'95% interval':>18}", "-" * 65]
    for r in d["rows"]:
        ci = ("" if r["ci95_low"] is None
              else f"[{_pct(r['ci95_low'])}, {_pct(r['ci95_high'])}]")
        lines.append(f"{r['class']:<6}{r['name'][:25]:<26}{r['count']:>7}"
                     f"{_pct(r['percent']):>8}{ci:>18}")
    lines += ["", f"flagged for review: {d['review_count']} ({_pct(d['review_percent'])}%)"]
    lines += [f"note: {n}" for n in d["notes"]]
    return "\n".join(lines)


def write_differential(d: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """``<stem>.differential.csv`` (the table) and ``.json`` (table, review share, notes)."""
    out = Path(out)
    stem = out.with_suffix("")
    csv_path = stem.with_name(stem.name + ".differential.csv")
    json_path = stem.with_name(stem.name + ".differential.json")
    with atomic_open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "name", "count", "percent", "ci95_low", "ci95_high"])
        for r in d["rows"]:
            w.writerow([r["class"], r["name"], r["count"]]
                       + ["" if r[k] is None else f"{r[k]:.2f}"
                          for k in ("percent", "ci95_low", "ci95_high")])
    # The CSV stays one tidy table (a row per class, nothing else) that any CSV reader takes
    # as it is; the review share and the notes live in the JSON and the printout.
    write_json(json_path, d)
    return csv_path, json_path
