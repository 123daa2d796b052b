"""Every figure, drawn from saved files (metrics.csv, evaluation JSON), never during training.

matplotlib runs with the Agg backend (no display needed); each PNG is written atomically.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from hemacnn.atomic import write_bytes  # noqa: E402
from hemacnn.errors import HemacnnError  # noqa: E402
from hemacnn.rundir import read_metrics  # noqa: E402

DPI = 110
FIGURES_ENV = "HEMACNN_FIGURES"


def run_figures_wanted() -> bool:
    """Whether training and ``evaluate`` draw a run's PNG figures (the default).

    ``HEMACNN_FIGURES=0`` skips them where nobody looks at them (batch jobs, the test suite:
    a figure costs about 0.3 s to draw); ``report`` draws its own from the saved files.
    """
    return os.environ.get(FIGURES_ENV, "1") != "0"


def _save(fig: plt.Figure, out_png: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    write_bytes(out_png, buf.getvalue())
    return Path(out_png)


def metrics_columns(metrics_csv: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of a run's metrics.csv (:func:`hemacnn.rundir.read_metrics`) as float arrays;
    a one-line error when it holds no epoch."""
    rows = read_metrics(metrics_csv)
    if not rows or "epoch" not in rows[0]:
        raise HemacnnError(f"{metrics_csv} has no epoch rows; train at least one epoch first")
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def _series(ax: plt.Axes, x: np.ndarray, y: np.ndarray | None, **kw: Any) -> None:
    if y is not None and np.isfinite(y).any():
        ok = np.isfinite(y)
        ax.plot(x[ok], y[ok], marker="o", markersize=3, **kw)


def plot_training_curves(metrics_csv: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Training and validation loss and accuracy per epoch (the paper's Figs 3-7 layout).

    Epochs count from 1, as the training log does; the best epoch (lowest validation loss,
    whose checkpoint is best.ckpt) is marked on both panels.
    """
    m = metrics_columns(metrics_csv)
    epochs = m["epoch"]
    val_loss = m.get("val_loss")
    best = None
    if val_loss is not None and np.isfinite(val_loss).any():
        best = int(epochs[np.nanargmin(np.where(np.isfinite(val_loss), val_loss, np.nan))])
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, what in ((ax_l, "loss"), (ax_a, "acc")):
        _series(ax, epochs, m.get(f"train_{what}"), label="training")
        _series(ax, epochs, m.get(f"val_{what}"), label="validation")
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1,
                       label=f"best epoch {best} (best.ckpt)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss" if what == "loss" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    ax_l.set_title("Loss per epoch (training and validation splits)")
    ax_a.set_title("Accuracy per epoch (training and validation splits)")
    return _save(fig, out_png)


def plot_pr_curves(metrics_csv: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Per-class validation precision and recall per epoch."""
    m = metrics_columns(metrics_csv)
    epochs = m["epoch"]
    codes = [k[len("val_precision_"):] for k in m if k.startswith("val_precision_")]
    fig, (ax_p, ax_r) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for code in codes:
        _series(ax_p, epochs, m.get(f"val_precision_{code}"), label=code)
        _series(ax_r, epochs, m.get(f"val_recall_{code}"), label=code)
    for ax, title in ((ax_p, "Validation precision per class"),
                      (ax_r, "Validation recall per class")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if codes:
            ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_confusion(cm: Sequence[Sequence[float]], classes: Sequence[str],
                   out_png: str | os.PathLike, normalise: bool = False,
                   split: str | None = None) -> Path:
    """Confusion matrix (rows true, columns predicted) with class codes on both axes."""
    counts = np.asarray(cm, dtype=float)
    if normalise:
        rows = counts.sum(axis=1, keepdims=True)
        counts = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(classes)
    side = max(3.5, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(counts, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), classes, rotation=45 if n > 6 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(("Confusion matrix (row-normalised)" if normalise else "Confusion matrix (counts)")
                 + _on(split))
    top = counts.max() if counts.size else 0
    if n <= 12:  # numbers stay legible up to about a dozen classes
        for i in range(n):
            for j in range(n):
                v = counts[i, j]
                ax.text(j, i, f"{v:.2f}" if normalise else f"{int(v)}", ha="center",
                        va="center", fontsize=9,
                        color="white" if top and v > 0.6 * top else "black")
    return _save(fig, out_png)


def _on(split: str | None) -> str:
    return f", {split} split" if split else ""


def plot_reliability(bins: Sequence[dict[str, Any]], out_png: str | os.PathLike,
                     ece: float | None = None, split: str | None = None) -> Path:
    """Reliability diagram: accuracy against mean confidence per confidence bin."""
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5, 5.5), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    lo = np.array([b["lo"] for b in bins])
    width = np.array([b["hi"] - b["lo"] for b in bins])
    acc = np.array([b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins])
    count = np.array([b["count"] for b in bins])
    ax.bar(lo, acc, width=width, align="edge", edgecolor="navy", color="steelblue",
           label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    conf = [(b["confidence"], b["accuracy"]) for b in bins if b["count"]]
    if conf:
        cx, cy = zip(*conf, strict=True)
        ax.plot(cx, cy, "o", color="darkorange", markersize=4, label="mean confidence")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    title = "Reliability diagram" + _on(split)
    if ece is not None:
        title += f" (ECE {ece:.3f})"
    # The legend sits in a strip above the bars (title above it): inside the axes it would
    # cover a bar wherever it went (the first bin is tall when low-confidence calls are right).
    ax.set_title(title, pad=24)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, frameon=False,
              borderaxespad=0.2, handlelength=1.5, columnspacing=1.0)
    ax_n.bar(lo, count, width=width, align="edge", color="grey")
    ax_n.set_xlabel("confidence (top-class probability)")
    ax_n.set_ylabel("images")
    ax_n.set_xlim(0, 1)
    return _save(fig, out_png)


def plot_cv_f1(classes: Sequence[str], f1_by_fold: Sequence[Sequence[float | None]],
               out_png: str | os.PathLike) -> Path:
    """Per-class F1 over cross-validation folds: mean bar, sd whisker, each fold as a dot."""
    f1 = np.array([[math.nan if v is None else v for v in row] for row in f1_by_fold], float)
    x = np.arange(len(classes))
    counts = np.sum(~np.isnan(f1), axis=0)
    safe = np.where(counts > 0, counts, 1)
    mean = np.where(counts > 0, np.nansum(f1, axis=0) / safe, np.nan)
    dev = np.where(np.isnan(f1), 0.0, f1 - mean)
    sd = np.sqrt(np.sum(dev ** 2, axis=0) / np.maximum(counts - 1, 1))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(classes) + 2), 3.6))
    ax.bar(x, mean, color="#9ecae1", yerr=sd, capsize=3, label="mean ± sd")
    for row in f1:
        ax.plot(x, row, "o", ms=3, color="#08519c", alpha=0.7)
    ax.set_xticks(x, list(classes), rotation=90 if len(classes) > 10 else 0)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("test F1")
    ax.set_title(f"Per-class F1 over {len(f1)} folds (dots: folds)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out_png)
