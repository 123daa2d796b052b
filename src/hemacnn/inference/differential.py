"""The differential count: a batch of cells read as one patient's marrow.

Counts and percentages per class with 95% Wilson score intervals (the same interval the
evaluation uses for per-class rates), the share flagged for review, blasts first because the
blast percentage is the number a haematologist reads first. The JSON and the printout carry the
notes in :data:`RESEARCH_NOTE` and, when the model knows blasts, :data:`WHO_NOTE`; the CSV is
the bare table (one row per class).

A Wilson interval covers counting noise only, not the model's errors: a model that finds 60% of
blasts reports 12% of a marrow that holds 20%. With the model's test confusion (the run folder's
``test_metrics.json``, :func:`run_confusion`) every class also gets an adjusted share, the
model's errors corrected, with a bootstrap interval over these cells and the test split
(:func:`hemacnn.scoring.prevalence.adjusted_shares`), and its test recall beside it.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.atomic import atomic_open, write_json
from hemacnn.card import read_card
from hemacnn.classes import class_name
from hemacnn.errors import HemacnnError
from hemacnn.inference.runcard import card_differences
from hemacnn.rundir import RunDir
from hemacnn.scoring.metrics import wilson_interval
from hemacnn.scoring.prevalence import MIN_TEST_CELLS, AdjustedShares, adjusted_shares

RESEARCH_NOTE = ("Research use only: a model's differential is not a diagnosis; a qualified "
                 "person must review the cells.")
WHO_NOTE = ("A blast share of 20% or more is the WHO threshold for acute leukaemia; confirm "
            "any such count by manual review.")
FIRST = ("BLA",)  # shown first, in this order
ADJUSTED_FIELDS = ("adjusted_percent", "adjusted_ci95_low", "adjusted_ci95_high", "adjusted",
                   "test_recall", "test_cells")
ADJUST_METHOD = ("adjusted classify-and-count: maximum likelihood on the simplex by EM "
                 "(Saerens et al. 2002) with the row-normalised test confusion; 95% percentile "
                 "bootstrap over these cells and the test split")


@dataclass(frozen=True)
class ModelConfusion:
    """The model's confusion counts on its own test split, in the model's class order."""

    counts: np.ndarray  # (K, K): row = true class, column = predicted
    source: str  # the file it was read from


def run_confusion(model: str | os.PathLike, card: dict[str, Any]) -> ModelConfusion | None:
    """The test confusion of the run ``model`` belongs to: its folder's ``test_metrics.json``
    (else ``evaluation_test.json``); a checkpoint or export file looks in the run folder above
    it, used only when that folder's card describes the same model. None when there is none."""
    model = Path(model)
    folders = [model] if model.is_dir() else [model.parent, model.parent.parent]
    for folder in folders:
        run = RunDir(folder)
        if not run.card.is_file():
            continue
        try:
            if card_differences(card, read_card(folder)):
                continue
        except HemacnnError:
            continue
        for path in (run.test_metrics, run.evaluation("test")):
            found = _read_confusion(path, list(card["classes"]))
            if found is not None:
                return found
    return None


def _read_confusion(path: Path, classes: list[str]) -> ModelConfusion | None:
    try:
        cm = json.loads(path.read_text(encoding="utf-8"))["confusion_matrix"]
        labels, counts = list(cm["labels"]), np.asarray(cm["counts"], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if sorted(labels) != sorted(classes) or counts.shape != (len(labels), len(labels)):
        return None
    order = [labels.index(c) for c in classes]
    return ModelConfusion(counts[np.ix_(order, order)], str(path))


def _pct100(v: float) -> float | None:
    return None if math.isnan(v) else round(100.0 * float(v), 4)


def _adjust(counts: list[int], classes: Sequence[str], confusion: ModelConfusion | None,
            seed: int) -> tuple[AdjustedShares | None, dict[str, Any]]:
    if confusion is None:
        return None, {"method": None, "reason": "no test confusion of this model found (the "
                      "run folder's test_metrics.json): the shares are not adjusted for the "
                      "model's errors"}
    if sum(counts) == 0:
        return None, {"method": None, "reason": "no cells classified"}
    adj = adjusted_shares(np.asarray(counts), confusion.counts, seed=seed)
    small = [c for c, ok in zip(classes, adj.adjusted, strict=True) if not ok]
    info = {"method": ADJUST_METHOD, "source": confusion.source,
            "test_cells": int(confusion.counts.sum()), "resamples": adj.resamples,
            "seed": adj.seed, "min_test_cells": MIN_TEST_CELLS, "not_adjusted": small}
    return adj, info


def differential(labels: Sequence[str], classes: Sequence[str],
                 review: Sequence[bool] | None = None, confusion: ModelConfusion | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """Count, percentage and 95% interval per class for the predicted ``labels`` of one batch;
    with the model's test ``confusion``, also the adjusted share and interval (``seed``: the
    bootstrap's) and the test recall per class."""
    n = len(labels)
    order = [c for c in FIRST if c in classes] + [c for c in classes if c not in FIRST]
    counts = [sum(1 for label in labels if label == code) for code in classes]
    adj, info = _adjust(counts, classes, confusion, seed)
    rows = []
    for code in order:
        i = list(classes).index(code)
        k = counts[i]
        ci = wilson_interval(k, n)
        row = {"class": code, "name": class_name(code), "count": k,
               "percent": round(100.0 * k / n, 4) if n else None,
               "ci95_low": round(100.0 * ci[0], 4) if ci else None,
               "ci95_high": round(100.0 * ci[1], 4) if ci else None}
        row.update(dict.fromkeys(ADJUSTED_FIELDS))
        if adj is not None:
            row.update(adjusted_percent=_pct100(adj.share[i]),
                       adjusted_ci95_low=_pct100(adj.low[i]),
                       adjusted_ci95_high=_pct100(adj.high[i]), adjusted=bool(adj.adjusted[i]),
                       test_recall=None if math.isnan(adj.recall[i]) else float(adj.recall[i]),
                       test_cells=int(adj.test_cells[i]))
        rows.append(row)
    flagged = sum(bool(r) for r in review) if review is not None else 0
    notes = [RESEARCH_NOTE] + ([WHO_NOTE] if "BLA" in classes else [])
    if info.get("not_adjusted"):
        notes.append(f"too few test cells (under {MIN_TEST_CELLS}) to measure the model's errors "
                     f"on {', '.join(info['not_adjusted'])}: raw share and Wilson interval "
                     "given as the adjusted figures")
    if info["method"] is None and n:
        notes.append(f"not adjusted for the model's errors: {info['reason']}")
    return {"n_cells": n, "rows": rows, "review_count": flagged,
            "review_percent": 100.0 * flagged / n if n else None,
            "ci_method": "wilson", "adjustment": info, "notes": notes}


def from_predictions(preds: Sequence[Any], classes: Sequence[str],
                     confusion: ModelConfusion | None = None) -> dict[str, Any]:
    """The differential of :class:`hemacnn.inference.predict.Prediction` results (each with
    ``code`` and ``review``); files that could not be classified (no code) are left out."""
    done = [p for p in preds if p.code]
    return differential([p.code for p in done], classes, [bool(p.review) for p in done],
                        confusion=confusion)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _ci(low: float | None, high: float | None) -> str:
    return "" if low is None else f"[{_pct(low)}, {_pct(high)}]"


def format_differential(d: dict[str, Any]) -> str:
    """The differential as a printed table with its notes."""
    info = d.get("adjustment") or {}
    adjusted = info.get("method") is not None
    head = f"{'class':<6}{'name':<26}{'count':>7}{'%':>8}{'95% Wilson':>16}"
    if adjusted:
        head += f"{'adj. %':>9}{'95% bootstrap':>16}{'test recall':>20}"
    lines = [f"Differential count of {d['n_cells']} cells", "", head, "-" * len(head)]
    for r in d["rows"]:
        line = (f"{r['class']:<6}{r['name'][:25]:<26}{r['count']:>7}"
                f"{_pct(r['percent']):>8}{_ci(r['ci95_low'], r['ci95_high']):>16}")
        if adjusted:
            recall = ("n/a" if r["test_recall"] is None else f"{r['test_recall']:.2f}")
            recall += f" (n={r['test_cells']})" + ("" if r["adjusted"] else "*")
            line += (f"{_pct(r['adjusted_percent']):>9}"
                     f"{_ci(r['adjusted_ci95_low'], r['adjusted_ci95_high']):>16}{recall:>20}")
        lines.append(line)
    if adjusted:
        lines += ["", f"adj. %: the model's errors corrected with its confusion on "
                  f"{info['test_cells']} test cells ({info['source']}); {info['method']} "
                  f"({info['resamples']} resamples, seed {info['seed']})"]
        if info["not_adjusted"]:
            lines.append(f"* under {info['min_test_cells']} test cells: not adjusted, raw "
                         "figures repeated")
    lines += ["", f"flagged for review: {d['review_count']} ({_pct(d['review_percent'])}%)"]
    lines += [f"note: {n}" for n in d["notes"]]
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def write_differential(d: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """``<stem>.differential.csv`` (the table) and ``.json`` (table, review share, notes)."""
    out = Path(out)
    stem = out.with_suffix("")
    csv_path = stem.with_name(stem.name + ".differential.csv")
    json_path = stem.with_name(stem.name + ".differential.json")
    with atomic_open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "name", "count", "percent", "ci95_low", "ci95_high",
                    *ADJUSTED_FIELDS])
        for r in d["rows"]:
            w.writerow([r["class"], r["name"], r["count"]]
                       + [_cell(r.get(k)) for k in ("percent", "ci95_low", "ci95_high",
                                                    *ADJUSTED_FIELDS)])
    # The CSV stays one tidy table (a row per class, nothing else) that any CSV reader takes
    # as it is; the review share and the notes live in the JSON and the printout.
    write_json(json_path, d)
    return csv_path, json_path
