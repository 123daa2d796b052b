"""A study's figures (PNG), drawn from its run folders and summary rows.

Figure kinds a study file can ask for (``figures: [{kind: ..., ...}]``):

``step_loss`` (``panel_by``: a summary column)
    training loss per mini-batch, one panel per value of the column (the paper's Figs 11-12).
``curves`` (``metric``: a metrics.csv column, default val_loss)
    that metric per epoch, one line per point, one axes (Table 5's runs).
``train_val``
    training and validation loss per epoch overlaid, one panel per point (Figs 8-10).
``bars`` (``prefix``: e.g. ``f1_``, or ``metrics``: a list of summary columns)
    grouped bars, one group per class (or metric), one bar per point.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hemacnn.plots import _save, plt, read_metrics_csv
from hemacnn.steploss import read_step_loss


def _panels(n: int, width: float = 5.0, height: float = 3.6):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _dress(ax: Any, xlabel: str, ylabel: str, title: str | None = None) -> None:
    """Labels, a light grid and a small legend: every study panel looks alike."""
    if title is not None:
        ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _step_loss(out: Path, rows: list[dict], spec: dict) -> Any:
    by = spec.get("panel_by")
    groups: dict[Any, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get(by) if by else "all", []).append(row)
    fig, axes = _panels(len(groups))
    for ax, (group, members) in zip(axes, groups.items(), strict=True):
        for row in members:
            steps = read_step_loss(out / "runs" / row["point"] / "step_loss.csv")
            ax.plot([s["step"] + 1 for s in steps], [s["loss"] for s in steps],
                    linewidth=1, label=row["point"])
        _dress(ax, "mini-batch", "training loss",
               f"{by} {group}" if by else "training loss per mini-batch")
    return fig


def _curves(out: Path, rows: list[dict], spec: dict) -> Any:
    metric = spec.get("metric", "val_loss")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row in rows:
        m = read_metrics_csv(out / "runs" / row["point"] / "metrics.csv")
        ax.plot(m["epoch"], m[metric], marker="o", markersize=3, label=row["point"])
    _dress(ax, "epoch", metric)
    return fig


def _train_val(out: Path, rows: list[dict], spec: dict) -> Any:
    fig, axes = _panels(len(rows))
    for ax, row in zip(axes, rows, strict=True):
        m = read_metrics_csv(out / "runs" / row["point"] / "metrics.csv")
        ax.plot(m["epoch"], m["train_loss"], marker="o", markersize=3, label="training")
        ax.plot(m["epoch"], m["val_loss"], marker="o", markersize=3, label="validation")
        _dress(ax, "epoch", "loss", row["point"])
    return fig


def _bars(out: Path, rows: list[dict], spec: dict) -> Any:
    prefix = spec.get("prefix")
    keys = spec.get("metrics") or sorted({k for r in rows for k in r if prefix
                                          and k.startswith(prefix)})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(keys) * max(1, len(rows)) / 2), 4))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        ax.bar([j + i * width for j in range(len(keys))],
               [row.get(k) or 0.0 for k in keys], width, label=row["point"])
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([k.removeprefix(prefix or "") for k in keys])
    ax.set_ylabel(spec.get("ylabel", prefix.rstrip("_") if prefix else "value"))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig


KINDS = {"step_loss": _step_loss, "curves": _curves, "train_val": _train_val, "bars": _bars}


def draw_figures(out: Path, record: dict, rows: list[dict]) -> list[Path]:
    """Draw every figure the study asks for into OUT/figures/; returns the PNG paths."""
    paths = []
    if not rows:
        return paths
    for i, spec in enumerate(record.get("figures", [])):
        fig = KINDS[spec["kind"]](out, rows, spec)
        if spec.get("title"):
            fig.suptitle(spec["title"])
        name = spec.get("name") or f"{record['study']}_{spec['kind']}_{i}"
        paths.append(_save(fig, out / "figures" / f"{name}.png"))
    return paths
