"""Classification metrics from arrays of labels and probabilities (MedMNIST style).

Pure functions: no model, no files. A report can therefore be recomputed from a saved
``predictions_*.npz`` at any time.

Conventions (documented in the README's ``--json`` section):

* **Never-predicted class**: precision 0 (scikit-learn's ``zero_division=0``), and the class is
  listed in ``notes``.
* **Class absent from the labels** (support 0): recall, F1 and ROC-AUC are ``None`` (undefined),
  precision is 0 if the model predicted it (every such prediction is wrong) and ``None`` if not.
  Macro averages and balanced accuracy are taken over the classes *present* in the labels, which
  is what ``balanced_accuracy_score`` does and what ``precision_recall_fscore_support`` gives
  with ``labels=<present classes>``.
* **Confidence intervals**: 95% Wilson score intervals (``ci_method: "wilson"``) for per-class
  recall (successes = true positives, trials = support) and precision (trials = predictions).
* **Headline intervals**: accuracy and macro-F1 get 95% percentile-bootstrap intervals
  (``headline_ci``: 2,000 resamples of the images, seeded, so a report is reproducible).
* **Calibration**: top-label expected calibration error over ``n_bins`` equal-width bins.
* **Tolerant figures** (Matek et al. 2021 after Krappe et al. 2016): a prediction inside the
  true class's tolerance group counts as correct. Tolerant recall of class c = share of true-c
  images predicted inside group(c); tolerant precision of c = share of c-predictions whose true
  class is inside group(c) (the row/column reading of Matek's Table 1). Groups are symmetric,
  so accuracy = share of images predicted inside their true class's group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hemacnn.classes import class_names, tolerance_groups
from hemacnn.errors import HemacnnError

Z_95 = 1.959963984540054
"""Standard-normal quantile for a two-sided 95% interval."""


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> list[float] | None:
    """Wilson score interval for a binomial proportion; ``None`` when there are no trials."""
    if trials <= 0:
        return None
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _check_inputs(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> None:
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise HemacnnError(
            f"probabilities have shape {probs.shape}, expected (N, {len(classes)}) for classes "
            f"{','.join(classes)}"
        )
    if y_true.shape != (probs.shape[0],):
        raise HemacnnError(f"{y_true.shape[0]} labels for {probs.shape[0]} predictions")
    if len(y_true) == 0:
        raise HemacnnError("no predictions to evaluate (0 images)")
    if y_true.min() < 0 or y_true.max() >= len(classes):
        raise HemacnnError(f"labels must be class indices 0..{len(classes) - 1}")


def tolerance_matrix(classes: Sequence[str],
                     tolerance: Mapping[str, Any] | None = None) -> np.ndarray:
    """Boolean C x C matrix: ``[t, p]`` is True when predicting p for true t is tolerated."""
    groups = tolerance_groups(classes) if tolerance is None else tolerance
    ok = np.eye(len(classes), dtype=bool)
    for i, t in enumerate(classes):
        for j, p in enumerate(classes):
            if p in groups.get(t, ()) or t in groups.get(p, ()):
                ok[i, j] = True  # symmetric even if the mapping given is one-sided
    return ok


def _per_class(cm: np.ndarray, ok: np.ndarray, classes: Sequence[str],
               names: Sequence[str]) -> dict[str, dict]:
    """Per-class precision/recall/F1 from a confusion matrix and an accepted-cell mask."""
    out: dict[str, dict] = {}
    for i, code in enumerate(classes):
        support = int(cm[i].sum())
        predicted = int(cm[:, i].sum())
        hits_row = int(cm[i][ok[i]].sum())        # true i predicted inside group(i)
        hits_col = int(cm[:, i][ok[:, i]].sum())  # predicted i, truth inside group(i)
        recall = hits_row / support if support else None
        if predicted:
            precision = hits_col / predicted
        else:
            precision = 0.0 if support else None  # sklearn zero_division=0 where defined
        out[code] = {
            "name": names[i],
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall),
            "support": support,
            "predicted": predicted,
            "precision_ci": wilson_interval(hits_col, predicted),
            "recall_ci": wilson_interval(hits_row, support),
        }
    return out


def _headline(per: dict[str, dict], cm: np.ndarray, ok: np.ndarray) -> dict[str, float]:
    present = [c for c in per.values() if c["support"] > 0]
    total = sum(c["support"] for c in present)
    return {
        "accuracy": float(cm[ok].sum() / cm.sum()),
        "balanced_accuracy": float(np.mean([c["recall"] for c in present])),
        "macro_precision": float(np.mean([c["precision"] for c in present])),
        "macro_recall": float(np.mean([c["recall"] for c in present])),
        "macro_f1": float(np.mean([c["f1"] for c in present])),
        "weighted_f1": float(sum(c["f1"] * c["support"] for c in present) / total),
    }


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                 resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Percentile-bootstrap intervals of accuracy and macro-F1 (images resampled with replacement).

    Macro-F1 of a resample averages over the classes present in that resample's labels, as
    the point estimate does.
    """
    # Not scipy.stats.bootstrap(paired=True, method="percentile"): it draws the very same
    # resamples from this seed, but its percentile interpolation differs from np.percentile's
    # in the last bit in about half the cases tried, which would change every recorded
    # headline_ci; and unbatched, its (resamples x images) index array is 270 MB on the full
    # test split.
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    n = len(y_true)
    rng = np.random.default_rng(seed)
    acc, f1 = np.empty(resamples), np.empty(resamples)
    k = n_classes
    for r in range(resamples):
        idx = rng.integers(0, n, n)
        t, p = y_true[idx], y_pred[idx]
        cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
        tp = np.diag(cm).astype(float)
        support, predicted = cm.sum(axis=1), cm.sum(axis=0)
        denom = support + predicted
        f1s = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
        acc[r] = tp.sum() / n
        f1[r] = f1s[support > 0].mean()
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {"method": "percentile bootstrap", "resamples": resamples, "level": level,
            "seed": seed,
            "accuracy": [float(v) for v in np.percentile(acc, [lo, hi])],
            "macro_f1": [float(v) for v in np.percentile(f1, [lo, hi])]}


def calibration(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15,
                y_pred: np.ndarray | None = None) -> dict[str, Any]:
    """Top-label expected calibration error and the reliability-diagram bins.

    ``y_pred`` (default: the argmax): the label called, whose probability is the confidence.
    """
    y_pred = probs.argmax(axis=1) if y_pred is None else np.asarray(y_pred, dtype=int)
    conf = probs[np.arange(len(y_pred)), y_pred]
    correct = y_pred == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are (lo, hi]; a confidence of exactly 0 cannot occur for a top-label softmax.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        acc = float(correct[sel].mean()) if n else None
        mean_conf = float(conf[sel].mean()) if n else None
        if n:
            ece += n / len(conf) * abs(acc - mean_conf)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
                     "accuracy": acc, "confidence": mean_conf})
    return {"ece": float(ece), "n_bins": n_bins, "bins": bins,
            "method": "top-label, equal-width bins"}


def _tolerance_source(classes: Sequence[str], tolerance: Mapping[str, Any] | None,
                      groups: dict[str, list[str]]) -> str:
    if not any(groups.values()):
        return "none (no tolerance group joins two of these classes)"
    if tolerance is None:
        return "Matek et al. 2021 Table 1 tolerance classes (after Krappe et al. 2016)"
    return "given by the caller"


def confusion_figures(cm: np.ndarray, classes: Sequence[str]) -> dict[str, dict]:
    """Per-class precision, recall, F1 and Wilson intervals from a confusion matrix alone
    (rows: truth, columns: prediction), for figures whose cells are not at hand."""
    cm = np.asarray(cm)
    return _per_class(cm, np.eye(len(classes), dtype=bool), list(classes), list(classes))


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                    tolerance: Mapping[str, Any] | None = None, n_bins: int = 15,
                    names: Sequence[str] | None = None,
                    y_pred: np.ndarray | None = None) -> dict:
    """Every evaluation figure (strict and tolerant) from labels and class probabilities.

    ``tolerance`` maps a class code to the codes accepted as tolerant-correct; ``None`` uses
    Matek's groups (:func:`hemacnn.classes.tolerance_groups`) for a Matek class set and none
    otherwise; ``{}`` makes the tolerant figures strict. ``names`` are the display names
    (default :func:`hemacnn.classes.class_names`: Matek's only for a Matek class set).
    ``y_pred`` (default: the argmax of ``probs``): the labels called, when they come from
    elsewhere (another dataset's classes: the model's own call, mapped; see
    :mod:`hemacnn.scoring.mapped`); the confusion matrix, precision, recall and calibration
    count them, the ROC-AUC ranks ``probs``.
    """
    # lazy: scikit-learn ~1.3 s (importtime, measured under load) and ~200 MB; the differential
    # count, which serve and predict use, needs only the Wilson interval above
    from sklearn.metrics import confusion_matrix, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    classes = list(classes)
    _check_inputs(y_true, probs, classes)
    y_pred = probs.argmax(axis=1) if y_pred is None else np.asarray(y_pred).astype(int)
    if y_pred.shape != y_true.shape or y_pred.min() < 0 or y_pred.max() >= len(classes):
        raise HemacnnError(f"predicted labels must be {len(y_true)} class indices "
                           f"0..{len(classes) - 1}")
    labels = list(range(len(classes)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    strict_ok = np.eye(len(classes), dtype=bool)
    tol_ok = tolerance_matrix(classes, tolerance)

    names = list(names) if names is not None else class_names(classes)
    if len(names) != len(classes):
        names = class_names(classes)  # a damaged card: fall back rather than mislabel
    per = _per_class(cm, strict_ok, classes, names)
    for i, code in enumerate(classes):
        pos = y_true == i
        # One-vs-rest AUC needs both positives and negatives.
        per[code]["roc_auc"] = (float(roc_auc_score(pos, probs[:, i]))
                                if 0 < pos.sum() < len(pos) else None)

    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)

    notes = []
    never = [c for c, v in per.items() if v["predicted"] == 0 and v["support"] > 0]
    if never:
        notes.append(f"never predicted (precision set to 0): {', '.join(never)}")
    absent = [c for c, v in per.items() if v["support"] == 0]
    if absent:
        notes.append(f"absent from the labels (recall/F1 undefined, left out of macro "
                     f"averages): {', '.join(absent)}")

    tol_per = _per_class(cm, tol_ok, classes, names)
    groups = {c: sorted(classes[j] for j in np.flatnonzero(tol_ok[i]) if j != i)
              for i, c in enumerate(classes)}
    return {
        "classes": classes,
        "n": int(len(y_true)),
        **_headline(per, cm, strict_ok),
        "per_class": per,
        "headline_ci": bootstrap_ci(y_true, y_pred, len(classes)) if len(y_true) else None,
        "ci_method": "wilson",
        "ci_level": 0.95,
        "confusion_matrix": {"labels": classes, "counts": cm.tolist(),
                             "normalised": normalised.tolist()},
        "calibration": calibration(y_true, probs, n_bins, y_pred),
        "tolerant": {
            **_headline(tol_per, cm, tol_ok),
            "per_class": tol_per,
            "groups": {c: g for c, g in groups.items() if g},
            "source": _tolerance_source(classes, tolerance, groups),
        },
        "notes": notes,
    }
