"""Another dataset's cells scored in that dataset's own classes, through a resolved class map.

A cell's truth is its folder (a prefix rule's cells belong to their folder), its prediction the
folder that the model's own call stands for (:attr:`ResolvedMap.target_of`), and a folder's
probability the sum of its model classes' probabilities. Every figure of
:func:`hemacnn.scoring.metrics.compute_metrics` then reads in the other dataset's terms:
per-class precision, recall and F1, macro-F1, the confusion matrix, one-vs-rest ROC-AUC over
the summed probabilities, and top-label calibration (the confidence: the summed probability of
the folder called). A call of a model class that has no counterpart there is wrong whatever the
cell: it lands in the predicted column :data:`UNMAPPED`, whose row is empty (support 0, so it
is left out of the macro averages like any absent class; its precision is 0).

The earlier rule labelled a cell with the model's own call whenever that call was among the
truth's classes, so the per-class figures of a class sharing a folder (MYB under PBC's ``ig``)
were set by the predictions being scored: MYB's recall was 1 by construction. Only accuracy and
calibration were exact.

The in-domain side of the comparison is the run's own test split read the same way: its
confusion matrix collapsed through the same map (a test PMO called MYB counts as ig called ig).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.errors import HemacnnError
from hemacnn.scoring.classmap import LeftOut, ResolvedMap, left_out_text
from hemacnn.scoring.metrics import compute_metrics, confusion_figures

UNMAPPED = "(no counterpart)"
"""The predicted column of calls of model classes with no counterpart in the other dataset."""


@dataclass(frozen=True)
class TargetScores:
    """Cells in the other dataset's classes: the arrays that ``compute_metrics`` takes."""

    classes: list[str]
    """The map's folders with a counterpart, then :data:`UNMAPPED` when a model class has none."""
    y_true: np.ndarray
    y_pred: np.ndarray
    """The folder each model call stands for."""
    probs: np.ndarray
    """Per cell and folder, the summed probabilities of its model classes."""
    model_pred: np.ndarray
    """The model's own call (an index into the model's classes)."""


def _columns(resolved: ResolvedMap, codes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    targets = list(resolved.targets)
    extra = [UNMAPPED] if any(c not in resolved.target_of for c in resolved.model_classes) else []
    classes = targets + extra
    col = np.array([targets.index(resolved.target_of[c]) if c in resolved.target_of
                    else len(targets) for c in codes], dtype=np.int64)
    return classes, col


def target_scores(resolved: ResolvedMap, cell_targets: Sequence[Sequence[str]],
                  probs: np.ndarray) -> TargetScores:
    """``probs`` (cells x model classes) and each cell's scored model classes (as
    :meth:`ResolvedMap.label` gives them) in the other dataset's classes."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(resolved.model_classes):
        raise HemacnnError(f"probabilities have shape {probs.shape}, expected (N, "
                           f"{len(resolved.model_classes)}) for the map's model")
    classes, col = _columns(resolved, resolved.model_classes)
    onto = np.zeros((len(col), len(classes)))
    onto[np.arange(len(col)), col] = 1.0
    model_pred = probs.argmax(axis=1)
    y_true = np.array([classes.index(resolved.target_of[t[0]]) for t in cell_targets],
                      dtype=np.int64)
    return TargetScores(classes, y_true, col[model_pred], probs @ onto, model_pred)


def score_mapped(scores: TargetScores) -> dict[str, Any]:
    """Every figure of ``compute_metrics`` in the other dataset's classes (no tolerance groups:
    Matek's join model classes, not this dataset's)."""
    return compute_metrics(scores.y_true, scores.probs, scores.classes, tolerance={},
                           names=scores.classes, y_pred=scores.y_pred)


def in_domain_mapped(resolved: ResolvedMap, confusion: dict[str, Any] | None
                     ) -> dict[str, Any] | None:
    """The run's own test confusion matrix (``labels``, ``counts``) collapsed through the map:
    per folder precision, recall [Wilson CI], F1 and support, and their macro-F1."""
    try:
        labels, counts = list(confusion["labels"]), np.asarray(confusion["counts"])
    except (TypeError, KeyError):
        return None
    _, col = _columns(resolved, labels)
    k = len(resolved.targets)
    onto = np.zeros((len(labels), k + 1), dtype=np.int64)
    onto[np.arange(len(labels)), col] = 1
    per = confusion_figures(onto.T @ counts @ onto, [*resolved.targets, UNMAPPED])
    keep = {t: {f: per[t][f] for f in ("precision", "recall", "recall_ci", "f1", "support")}
            for t in resolved.targets}
    present = [v["f1"] for v in keep.values() if v["support"]]
    return {"per_class": keep, "macro_f1": float(np.mean(present)) if present else None}


def class_map_record(resolved: ResolvedMap, scores: TargetScores, left_out: dict[str, int],
                     in_domain: dict[str, Any] | None) -> dict[str, Any]:
    """The evaluation JSON's ``class_map``: the map, what was left out, the model's own calls
    per folder (which ig cells went to PMO, MYB or MMZ) and the in-domain figures."""
    model = list(resolved.model_classes)
    calls = np.zeros((len(resolved.targets), len(model)), dtype=np.int64)
    np.add.at(calls, (scores.y_true, scores.model_pred), 1)
    if in_domain is not None:
        in_domain = {**in_domain, "mapped": in_domain_mapped(
            resolved, in_domain.get("confusion_matrix"))}
    return {**resolved.describe(), "left_out_counts": left_out,
            "unmapped": [c for c in model if c not in resolved.target_of],
            "model_calls": {"rows": list(resolved.targets), "columns": model,
                            "counts": calls.tolist()},
            "in_domain": in_domain}


def _f(v: float | None) -> str:
    return "  n/a" if v is None else f"{v:.3f}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


FIELDS = ("recall", "recall_ci", "f1", "support")


def side_by_side(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per folder of the other dataset: its figures there beside the in-domain figures of its
    model classes taken together (the run's test split collapsed through the same map).
    Empty for an evaluation saved under the earlier rule (no ``targets`` in its class map)."""
    cm = result["class_map"]
    inside = ((cm.get("in_domain") or {}).get("mapped") or {}).get("per_class") or {}
    rows = []
    for target, members in (cm.get("targets") or {}).items():
        here, there = inside.get(target) or {}, result["per_class"].get(target) or {}
        rows.append({"class": target, "model_classes": list(members),
                     "in_domain": {k: here.get(k) for k in FIELDS},
                     "other": {k: there.get(k) for k in FIELDS}})
    return rows


OLD_RULE = ("saved under the earlier rule (labels taken from the model's own calls, so per-class "
            "figures of classes sharing a folder are biased); evaluate it again")


def _macro_line(result: dict[str, Any]) -> str:
    inside = result["class_map"].get("in_domain") or {}
    mapped = (inside.get("mapped") or {}).get("macro_f1")
    n = len(result["class_map"].get("targets") or {})
    hci = (result.get("headline_ci") or {}).get("macro_f1")
    here = f"this dataset {result['macro_f1']:.3f}" + (f" {_ci(hci)}" if hci else "")
    if mapped is None:
        return (f"macro F1 over these {n} classes: {here}; no in-domain test evaluation in the "
                "run folder (run `hemacnn evaluate RUN` first)")
    own = (f"; the run's own macro F1 over all its classes {inside['macro_f1']:.3f}"
           if inside.get("macro_f1") is not None else "")
    return (f"macro F1 over these {n} classes: in-domain {mapped:.3f}, {here} (in-domain: "
            f"{inside.get('source')}{own})")


def format_mapped(result: dict[str, Any]) -> list[str]:
    """The mapped evaluation's own lines: which model classes stand for which folder, what was
    left out, and the in-domain / other-dataset table."""
    cm = result["class_map"]
    if "targets" not in cm:
        return ["", f"class map {cm['name']}: {OLD_RULE}"]
    lines = ["", f"class map {map_label(cm)}, scored in this dataset's classes: "
             + "; ".join(f"{t} <- {'/'.join(c)}" for t, c in cm["targets"].items())]
    if cm.get("unmapped"):
        lines.append(f"calls of {', '.join(cm['unmapped'])} (no counterpart here) count as "
                     f"wrong: column {UNMAPPED}")
    counts = cm.get("left_out_counts") or {}
    if counts:
        lines.append(f"left out (not scored): {left_out_text(counts)}")
        reasons = {t: cm["left_out"].get(t, LeftOut.NOT_IN_MAP.value) for t in counts}
        lines.append("  why: " + "; ".join(f"{t}: {w}" for t, w in sorted(reasons.items())))
    rows = side_by_side(result)
    names = [f"{r['class']} ({'/'.join(r['model_classes'])})" for r in rows]
    w = max([8, *(len(n) + 2 for n in names)])
    lines += ["", "in-domain test (its classes taken together) vs this dataset "
                  "(recall [95% CI], F1, n):"]
    head = f"{'class':<{w}}{'in-domain':>34}{'this dataset':>34}{'F1 change':>11}"
    lines += [head, "-" * len(head)]

    def cell(v: dict[str, Any]) -> str:
        if v.get("support") is None:
            return "n/a"
        return f"{_f(v['recall'])} {_ci(v['recall_ci'])} {_f(v['f1'])} {v['support']}"

    for name, row in zip(names, rows, strict=True):
        a, b = row["in_domain"], row["other"]
        delta = (f"{b['f1'] - a['f1']:+.3f}" if a.get("f1") is not None
                 and b.get("f1") is not None else "")
        lines.append(f"{name:<{w}}{cell(a):>34}{cell(b):>34}{delta:>11}")
    lines.append(_macro_line(result))
    return lines + confusion_sentences(cm)


def map_label(cm: dict[str, Any]) -> str:
    """The map's name once: ``matek-pbc (shipped)``, or ``NAME (FILE)`` for a map file."""
    source = str(cm.get("source") or "")
    return source if source.startswith(str(cm["name"])) else f"{cm['name']} ({source})"


def confusion_sentences(cm: dict[str, Any], top: int = 5) -> list[str]:
    """The largest confusions in words, from the model's own calls per folder: "lymphocyte
    was mostly called NGS (128 of 159)", for each folder whose most frequent call is not one of
    its own model classes (at most ``top``, the most cells first)."""
    calls = cm.get("model_calls") or {}
    counts = np.asarray(calls.get("counts") or [], dtype=np.int64)
    found = []
    for row, folder in zip(counts, calls.get("rows") or [], strict=False):
        if not row.sum():
            continue
        best = int(row.argmax())
        called = calls["columns"][best]
        if called not in (cm.get("targets") or {}).get(folder, ()):
            found.append((int(row[best]), f"{folder} was mostly called {called} "
                                          f"({row[best]} of {row.sum()})"))
    found.sort(key=lambda f: -f[0])
    if not found:
        return ["each folder's most frequent call is one of its own model classes"] \
            if len(counts) else []
    return ["top confusions (the model's own calls): " + "; ".join(t for _, t in found[:top])]


def report_blocks(result: dict[str, Any]) -> list[tuple]:
    """Report blocks (see :mod:`hemacnn.evaluation.report`) for one mapped evaluation: the
    in-domain / other-dataset table, the headline beside the run's own, what was left out."""
    cm = result["class_map"]
    blocks: list[tuple] = [("h3", f"Another dataset: {Path(result.get('data', '')).name} "
                                  f"(class map {cm['name']})")]
    if "targets" not in cm:
        return [*blocks, ("p", f"This evaluation was {OLD_RULE}.")]
    head = ["class (model classes)", "in-domain recall [95% CI]", "in-domain F1", "n",
            "this dataset recall [95% CI]", "this dataset F1", "n"]
    rows = []
    for row in side_by_side(result):
        a, b = row["in_domain"], row["other"]
        rows.append([f"{row['class']} ({'/'.join(row['model_classes'])})",
                     f"{_f(a['recall'])} {_ci(a['recall_ci'])}", _f(a["f1"]),
                     str(a["support"] if a["support"] is not None else "n/a"),
                     f"{_f(b['recall'])} {_ci(b['recall_ci'])}", _f(b["f1"]),
                     str(b["support"] if b["support"] is not None else "n/a")])
    blocks.append(("table", head, rows))
    text = (f"{result['n']} cells scored in this dataset's classes (each model class counted as "
            "the folder it stands for; in-domain: the run's test split read the same way); "
            + _macro_line(result))
    if cm.get("unmapped"):
        text += f". Calls of {', '.join(cm['unmapped'])} (no counterpart) count as wrong"
    if cm.get("left_out_counts"):
        text += f". Left out (not scored): {left_out_text(cm['left_out_counts'])}"
    if result.get("adapt_bn"):
        text += f". Test-time adaptation: {result['adapt_bn']}"
    blocks.append(("p", text + "."))
    return blocks
