"""``hemacnn cv``: k-fold cross-validation of one config, on the sweep's scheduling engine.

A cross-validation is a generated study: a grid over ``data.fold`` whose point ``fold<i>`` is
the config with ``data.folds=K data.fold=i``, run by the study pipeline
(:func:`hemacnn.studies.pipeline.run_plan`) as ``DIR/runs/fold<i>/``: the same folder checks,
Optuna storage, skip-finished/resume-killed logic and ``--workers`` as ``hemacnn sweep``. Then
the summary:

- ``summary.csv``: one row per fold and rows ``mean`` and ``sd`` (sample standard deviation,
  n-1) for every headline metric (strict and tolerant) and every class's F1;
- ``summary.json``: the same, plus per-class mean precision and recall and, when every fold's
  test split is a different part of the data (``data.fold_test=rotate``), the figures of the
  pooled out-of-fold predictions (each image predicted once, by the model that never saw it);
- ``summary.md`` and ``cv_f1.png``: the tables (beside Matek et al.'s fivefold means for Matek
  classes) and per-class F1 with fold-to-fold spread.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.atomic import write_json, write_text
from hemacnn.classes import is_matek_set
from hemacnn.config import load_config
from hemacnn.errors import HemacnnError
from hemacnn.evaluation.ensemble import format_ensemble, make_ensemble
from hemacnn.evaluation.plots import plot_cv_f1
from hemacnn.evaluation.published import load_published
from hemacnn.rundir import RunDir
from hemacnn.scoring.metrics import compute_metrics
from hemacnn.studies.pipeline import StudyPlan, run_plan
from hemacnn.studies.runner import GRACE_S, is_finished, run_dir_of
from hemacnn.studies.spec import StudySpec, expand_points

CV_JSON = "cv.json"
HEADLINE = ("accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1",
            "weighted_f1")


def cv_plan(config: str | os.PathLike, folds: int, overrides: list[str],
            command: str = "") -> StudyPlan:
    """A K-fold cross-validation as a generated study: a grid over ``data.fold``."""
    if folds < 2:
        raise HemacnnError(f"--folds must be at least 2 (got {folds}); Matek et al. used 5")
    taken = [o for o in overrides if o.split("=", 1)[0].strip() in ("data.folds", "data.fold")]
    if taken:
        raise HemacnnError(f"override {taken[0]} is set by cv itself; give --folds K instead")
    cfg = load_config(config, overrides)  # errors name the override that caused them
    config = Path(config)
    # Each fold keeps the config's own name (not the study's), as `hemacnn train` would.
    spec = StudySpec(study=f"cv-{folds}fold", base=config.name, path=str(config),
                     set={"name": cfg.name, "data.folds": folds},
                     grid={"name": "fold{data.fold}", "data.fold": list(range(folds))})
    points = expand_points(spec, overrides=overrides)  # every fold checked before any trains
    record = {"format": "hemacnn-cv/1", "config": str(config), "folds": folds,
              "overrides": list(overrides), "fold_test": cfg.data.fold_test,
              "command": command}
    return StudyPlan(spec.study, str(config), points, CV_JSON, record, describe=_describe,
                     unit="fold", report="hemacnn cv --report")


def _describe(record: dict) -> str:
    return f"a {record.get('folds')}-fold cross-validation"


def run_cv(config: str | os.PathLike, folds: int, out: str | os.PathLike | None = None,
           overrides: list[str] | None = None, workers: int = 1, storage: str | None = None,
           progress: bool = True, echo: Callable[[str], None] = print,
           ensemble: bool = False, grace_s: int | None = None, command: str = "") -> Path:
    """Train every missing fold of a K-fold cross-validation and write the summary.

    With ``ensemble`` the fold models are also averaged into ``DIR/ensemble`` (once).
    ``command`` is the command line to record (the caller's; the library never reads argv).
    """
    plan = cv_plan(config, folds, list(overrides or []), command)
    out = Path(out) if out else Path("cv") / f"{plan.points[0].config.name}-{folds}fold"
    if not run_plan(plan, out, workers=workers, storage=storage, progress=progress,
                    grace_s=grace_s or GRACE_S, echo=echo):
        return out
    for path in write_cv_summary(out):
        echo(f"wrote {path}")
    echo("\n".join(format_cv(cv_summary(out))[:14]))
    if ensemble:
        if RunDir(out / "ensemble").is_ensemble:
            echo(f"ensemble of the folds already in {out / 'ensemble'}")
        else:
            runs = [run_dir_of(out, p.name) for p in plan.points]
            echo(format_ensemble(make_ensemble(runs, out / "ensemble", command=command)))
    return out


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None
    return float(np.mean(xs)), (float(np.std(xs, ddof=1)) if len(xs) > 1 else None)


def _fold_rows(out: Path, record: dict) -> tuple[list[dict[str, Any]], list[dict], list[str]]:
    rows, evals = [], []
    for i in range(int(record["folds"])):
        run = run_dir_of(out, f"fold{i}")
        if not is_finished(run):
            raise HemacnnError(f"fold {i} of {out} is not finished ({run} has no "
                               "test_metrics.json); run the cv command again to finish it")
        e = json.loads(RunDir(run).test_metrics.read_text(encoding="utf-8"))
        evals.append(e)
        row = {"fold": f"fold{i}", "n": e["n"], **{k: e[k] for k in HEADLINE},
               "tolerant_macro_f1": e["tolerant"]["macro_f1"],
               "tolerant_accuracy": e["tolerant"]["accuracy"]}
        row.update({f"f1_{c}": v["f1"] for c, v in e["per_class"].items()})
        rows.append(row)
    classes = list(evals[0]["classes"])
    return rows, evals, classes


def _pooled(out: Path, record: dict, classes: list[str]) -> dict[str, Any] | None:
    """Metrics of the concatenated out-of-fold test predictions (rotating test folds only)."""
    if record.get("fold_test", "rotate") != "rotate":
        return None
    ys, ps = [], []
    for i in range(int(record["folds"])):
        fold = RunDir(run_dir_of(out, f"fold{i}"))  # the end-of-training test's predictions
        tta = json.loads(fold.test_metrics.read_text(encoding="utf-8")).get("tta")
        with np.load(fold.predictions("test_tta" if tta else "test")) as z:
            if [str(c) for c in z["classes"]] != classes:
                return None
            ys.append(z["y_true"])
            ps.append(z["probs"])
    m = compute_metrics(np.concatenate(ys), np.concatenate(ps), classes)
    return {"n": m["n"], **{k: m[k] for k in HEADLINE},
            "tolerant_macro_f1": m["tolerant"]["macro_f1"],
            "f1": {c: v["f1"] for c, v in m["per_class"].items()}}


def cv_summary(out: str | os.PathLike) -> dict[str, Any]:
    """Mean and sd over the folds of every headline metric and per-class figure."""
    out = Path(out)
    if not (out / CV_JSON).is_file():
        raise HemacnnError(f"{out} is not a cross-validation folder (no {CV_JSON}); give the "
                           "--out folder of a `hemacnn cv`")
    record = json.loads((out / CV_JSON).read_text(encoding="utf-8"))
    rows, evals, classes = _fold_rows(out, record)
    metrics = [k for k in rows[0] if k not in ("fold", "n")]
    stats = {k: dict(zip(("mean", "sd"), _mean_sd([r.get(k) for r in rows]), strict=True))
             for k in metrics}
    per_class = {}
    for c in classes:
        per_class[c] = {"name": evals[0]["per_class"][c]["name"]}
        for m in ("precision", "recall", "f1"):
            mean, sd = _mean_sd([e["per_class"][c][m] for e in evals])
            per_class[c][m] = {"mean": mean, "sd": sd}
    return {"record": record, "classes": classes, "folds": rows, "stats": stats,
            "per_class": per_class, "pooled": _pooled(out, record, classes)}


def _pm(stat: dict[str, float | None], digits: int = 4) -> str:
    if stat["mean"] is None:
        return "–"
    sd = "" if stat["sd"] is None else f" ± {stat['sd']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}{sd}"


def _csv(summary: dict[str, Any]) -> str:
    rows = summary["folds"]
    cols = list(rows[0])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    for which in ("mean", "sd"):
        w.writerow({"fold": which, "n": "",
                    **{k: summary["stats"][k][which] for k in cols if k not in ("fold", "n")}})
    return buf.getvalue()


def format_cv(summary: dict[str, Any]) -> list[str]:
    """Markdown lines: headline mean ± sd, per fold, per class (beside Matek where it applies)."""
    rec, st, classes = summary["record"], summary["stats"], summary["classes"]
    k = rec["folds"]
    test = ("each fold's test split is one fold (every image tested once)"
            if rec.get("fold_test", "rotate") == "rotate" else
            "one held-out test split for every fold; the folds rotate the validation set")
    lines = [f"# Cross-validation: {Path(rec['config']).name}, {k} folds", "",
             f"Config `{rec['config']}` with overrides `{' '.join(rec['overrides']) or '(none)'}`"
             f"; {test}. Mean ± sample standard deviation over the {k} folds.", ""]
    if rec.get("command"):
        lines += [f"Command: `{rec['command']}`", ""]
    lines += ["| metric | mean ± sd |", "|---|---|"]
    for key in (*HEADLINE, "tolerant_accuracy", "tolerant_macro_f1"):
        lines.append(f"| {key.replace('_', ' ')} | {_pm(st[key])} |")
    pooled = summary.get("pooled")
    if pooled:
        lines += ["", f"Pooled out-of-fold predictions ({pooled['n']} images): accuracy "
                  f"{pooled['accuracy']:.4f}, macro F1 {pooled['macro_f1']:.4f}, tolerant "
                  f"macro F1 {pooled['tolerant_macro_f1']:.4f}."]
    lines += ["", "## Per fold", "", "| fold | test images | accuracy | balanced acc. | macro F1 "
              "| tolerant macro F1 |", "|---|---|---|---|---|---|"]
    for r in summary["folds"]:
        lines.append(f"| {r['fold']} | {r['n']} | {r['accuracy']:.4f} | "
                     f"{r['balanced_accuracy']:.4f} | {r['macro_f1']:.4f} | "
                     f"{r['tolerant_macro_f1']:.4f} |")
    matek = ({p.key: p for p in load_published()}.get("matek2021_strict")
             if is_matek_set(classes) else None)
    head = "| class | name | precision | recall | F1 |" + (" Matek P / R / F1 |" if matek else "")
    lines += ["", "## Per class (mean ± sd over folds)", "", head,
              "|---|---|---|---|---|" + ("---|" if matek else "")]
    for c in classes:
        v = summary["per_class"][c]
        row = f"| {c} | {v['name']} | {_pm(v['precision'], 3)} | {_pm(v['recall'], 3)} | " \
              f"{_pm(v['f1'], 3)} |"
        if matek:
            pc = matek.per_class.get(c)
            row += (f" {pc['precision']:.2f} / {pc['recall']:.2f} / {matek.f1(c):.3f} |"
                    if pc else " – |")
        lines.append(row)
    if matek:
        lines += ["", f"Matek: {matek.label}, the mean of their fivefold cross-validation on "
                  f"all 21 classes and {matek.images:,} images (F1 derived from P and R): a "
                  "different class set or dataset size is not like for like."]
    return lines


def write_cv_summary(out: str | os.PathLike) -> list[Path]:
    """Write summary.json, summary.csv, summary.md and cv_f1.png into ``out``."""
    out = Path(out)
    summary = cv_summary(out)
    paths = [out / "summary.json", out / "summary.csv", out / "summary.md", out / "cv_f1.png"]
    write_json(paths[0], summary)
    write_text(paths[1], _csv(summary))
    plot_cv_f1(summary["classes"], [[r.get(f"f1_{c}") for c in summary["classes"]]
                                    for r in summary["folds"]], paths[3])
    write_text(paths[2], "\n".join(format_cv(summary) + ["", "![per-class F1](cv_f1.png)"])
               + "\n")
    return paths
