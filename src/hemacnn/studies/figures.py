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

Every kind draws what it can compare against: the paper's values where the study file gives
them (``paper:``; a star at the last mini-batch, a black diamond on a bar), the one-class
baseline as a dashed line (the class-prior loss for losses, the majority-class predictor for
accuracy and F1), and, with several seeds, the mean over seeds with a ±sd band or error bar.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.evaluation.plots import _save, metrics_columns, plt
from hemacnn.rundir import RunDir
from hemacnn.training.steploss import read_step_loss


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


def run_folder(out: Path, row: dict) -> Path:
    """A per-seed row's run folder: OUT/runs/RUN, or a shared point's in the other study's
    folder beside OUT (``shared_from``)."""
    home = out.parent / row["shared_from"] if row.get("shared_from") else out
    return home / "runs" / row["run"]


def _runs(out: Path, seeds: list[dict], point: str) -> list[Path]:
    return [run_folder(out, r) for r in seeds if r["point"] == point]


def _mean_band(ax: Any, series: list[tuple[list[float], list[float]]], label: str,
               **style: Any) -> None:
    """One line: the mean over seeds of (x, y) series of equal x; with several, a ±sd band."""
    n = min(len(x) for x, _ in series)
    if n == 0:
        return
    x = np.asarray(series[0][0][:n], dtype=float)
    ys = np.asarray([y[:n] for _, y in series], dtype=float)
    mean = np.nanmean(ys, axis=0)
    line, = ax.plot(x, mean, linewidth=1, label=label, **style)
    if len(series) > 1:
        sd = np.nanstd(ys, axis=0, ddof=1)
        ax.fill_between(x, mean - sd, mean + sd, alpha=0.2, color=line.get_color())


def _baseline(ax: Any, rows: list[dict], key: str, label: str) -> None:
    """The one-class baseline (mean over points) as a dashed grey line."""
    vals = [r[key] for r in rows if isinstance(r.get(key), int | float)]
    if vals:
        ax.axhline(float(np.mean(vals)), color="0.4", linestyle="--", linewidth=1, label=label)


def _paper(record: dict, column: str) -> dict[str, float]:
    """The paper's values of a summary column, by point."""
    values: dict[str, float] = {}
    for ref in record.get("paper", []):
        if ref.get("column") == column:
            values.update(ref.get("values") or {})
    return values


PRIOR = "class-prior loss (learnt nothing)"


def _step_loss(out: Path, rows: list[dict], spec: dict, seeds: list[dict], record: dict) -> Any:
    by = spec.get("panel_by")
    groups: dict[Any, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get(by) if by else "all", []).append(row)
    paper = _paper(record, "final_train_loss")
    fig, axes = _panels(len(groups))
    for ax, (group, members) in zip(axes, groups.items(), strict=True):
        for row in members:
            series = []
            for run in _runs(out, seeds, row["point"]):
                steps = read_step_loss(RunDir(run).step_loss)
                series.append(([s["step"] + 1 for s in steps], [s["loss"] for s in steps]))
            _mean_band(ax, series, row["point"])
            if row["point"] in paper and series and series[0][0]:
                ax.plot([series[0][0][-1]], [paper[row["point"]]], marker="*", markersize=11,
                        color="black", linestyle="none",
                        label=f"paper, final ({row['point']})")
        _baseline(ax, members, "prior_loss", PRIOR)
        _dress(ax, "mini-batch", "training loss",
               f"{by} {group}" if by else "training loss per mini-batch")
    return fig


def _epoch_series(run: Path, metric: str) -> tuple[list[float], list[float]]:
    m = metrics_columns(RunDir(run).metrics)  # epochs counted from 1, as the log counts them
    return list(m["epoch"]), list(m[metric])


BASELINE_OF = {"val_loss": ("prior_loss", PRIOR),
               "train_loss": ("prior_loss", PRIOR),
               "val_acc": ("baseline_accuracy", "majority-class predictor")}


def _curves(out: Path, rows: list[dict], spec: dict, seeds: list[dict], record: dict) -> Any:
    metric = spec.get("metric", "val_loss")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row in rows:
        _mean_band(ax, [_epoch_series(r, metric) for r in _runs(out, seeds, row["point"])],
                   row["point"], marker="o", markersize=3)
    if metric in BASELINE_OF:
        _baseline(ax, rows, *BASELINE_OF[metric])
    _dress(ax, "epoch", metric)
    return fig


def _train_val(out: Path, rows: list[dict], spec: dict, seeds: list[dict], record: dict) -> Any:
    fig, axes = _panels(len(rows))
    for ax, row in zip(axes, rows, strict=True):
        runs = _runs(out, seeds, row["point"])
        for metric, label in (("train_loss", "training"), ("val_loss", "validation")):
            _mean_band(ax, [_epoch_series(r, metric) for r in runs], label,
                       marker="o", markersize=3)
        _baseline(ax, [row], "prior_loss", PRIOR)
        _dress(ax, "epoch", "loss", row["point"])
    return fig


def _bar_baseline(key: str) -> tuple[str, str] | None:
    if key.startswith("f1_") or key.endswith("macro_f1"):
        return "baseline_macro_f1", "majority-class predictor (macro-F1)"
    if key.endswith("acc") or key.endswith("accuracy"):
        return "baseline_accuracy", "majority-class predictor (accuracy)"
    if key.endswith("loss"):
        return "prior_loss", PRIOR
    return None


def _bars(out: Path, rows: list[dict], spec: dict, seeds: list[dict], record: dict) -> Any:
    prefix = spec.get("prefix")
    keys = spec.get("metrics") or sorted({k for r in rows for k in r if prefix
                                          and k.startswith(prefix) and not k.endswith(
                                              ("_sd", "_ci95"))})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(keys) * max(1, len(rows)) / 2), 4))
    width = 0.8 / max(1, len(rows))
    marked = False
    for i, row in enumerate(rows):
        xs = [j + i * width for j in range(len(keys))]
        sd = [row.get(f"{k}_sd") for k in keys]
        ax.bar(xs, [row.get(k) or 0.0 for k in keys], width, label=row["point"],
               yerr=[v if isinstance(v, float) else 0.0 for v in sd] if any(
                   isinstance(v, float) for v in sd) else None, capsize=3)
        for x, k in zip(xs, keys, strict=True):
            value = _paper(record, k).get(row["point"])
            if value is not None:
                ax.plot([x], [value], marker="D", color="black", linestyle="none",
                        label=None if marked else "paper")
                marked = True
    drawn: set[str] = set()
    for j, k in enumerate(keys):  # each group's one-class baseline, a short dashed segment
        base = _bar_baseline(k)
        vals = [r[base[0]] for r in rows if base and isinstance(r.get(base[0]), int | float)]
        if vals:
            ax.hlines(float(np.mean(vals)), j - width / 2, j + width * (len(rows) - 0.5),
                      colors="0.3", linestyles="--", linewidth=1.2,
                      label=None if base[1] in drawn else base[1])
            drawn.add(base[1])
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([k.removeprefix(prefix or "") for k in keys])
    ax.set_ylabel(spec.get("ylabel", prefix.rstrip("_") if prefix else "value"))
    ax.grid(alpha=0.3, axis="y")
    # Beside the axes, not on them: inside, the box covered the first groups' bars.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


KINDS = {"step_loss": _step_loss, "curves": _curves, "train_val": _train_val, "bars": _bars}


def draw_figures(out: Path, record: dict, rows: list[dict],
                 seeds: list[dict] | None = None) -> list[Path]:
    """Draw every figure the study asks for into OUT/figures/; returns the PNG paths.
    ``rows``: one per point (means over seeds); ``seeds``: one per run (default: a run per
    point, named as the point)."""
    paths = []
    if not rows:
        return paths
    seeds = seeds or [{"point": r["point"], "run": r["point"]} for r in rows]
    for i, spec in enumerate(record.get("figures", [])):
        fig = KINDS[spec["kind"]](out, rows, spec, seeds, record)
        if spec.get("title"):
            fig.suptitle(spec["title"])
        name = spec.get("name") or f"{record['study']}_{spec['kind']}_{i}"
        paths.append(_save(fig, out / "figures" / f"{name}.png"))
    return paths
