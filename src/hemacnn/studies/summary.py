"""A study's summary from its run folders alone: summary.csv, summary.md and figures.

Per-point metrics (all read from files a run folder holds):

- ``final_train_loss`` / ``mean_train_loss``: with a step_loss.csv (``trainer.log_step_loss``),
  the mean of the last ``final_steps`` mini-batch losses (default 10) and the mean over all
  mini-batches; otherwise the last epoch's and the mean epoch training loss.
- ``final_val_loss``, ``best_val_loss``, ``best_epoch`` (1-based, lowest validation loss),
  ``best_val_acc`` and ``val_loss_at_best_acc``, ``epochs``, ``sec_per_epoch`` (training only).
- ``mean_val_loss``: validation loss averaged over epochs ``window: [first, last]`` (1-based,
  inclusive, the paper's Table 5 uses 7-20); ``change_pct``: % change of ``change_of`` (a
  metric) against the first point, as Table 5's last column.
- ``final_gap``: last epoch's validation minus training loss; ``mean_gap``: the same averaged
  over the last ``gap_epochs`` epochs (default 3).
- ``adam_bound``: the paper's bound on Adam's step, lr (1 - beta1) / sqrt(1 - beta2) (IV-F).
- ``test_accuracy``, ``test_macro_f1`` and ``f1_<CLASS>`` from test_metrics.json.
- ``baseline_accuracy``, ``baseline_macro_f1``: what always predicting the test split's most
  frequent class scores; ``prior_loss``: the cross-entropy of predicting the test split's class
  shares (the loss a model that learnt only the class prior reaches).

With several seeds per point, ``summary_seeds.csv`` has one row per run (point, seed, every
metric, whether it is degenerate and why) and ``summary.csv`` one row per point: the mean of
every metric over seeds, ``<metric>_sd`` (sample standard deviation) and ``<metric>_ci95`` (the
half-width of the 95 % t-interval of the mean), ``seeds`` and ``degenerate_seeds``. The study's
claims get their verdicts (:mod:`hemacnn.studies.verdicts`) in ``claims.csv`` and summary.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import yaml

from hemacnn.atomic import write_text
from hemacnn.errors import HemacnnError
from hemacnn.evaluation.report import write_report
from hemacnn.rundir import RunDir, read_metrics
from hemacnn.studies.figures import draw_figures, run_folder
from hemacnn.studies.verdicts import (
    RULE,
    ClaimResult,
    RunHealth,
    claim_results,
    interval,
    learning_marks,
    majority_baseline,
    mark_lines,
    run_health,
)
from hemacnn.training.steploss import read_step_loss

DEFAULT_METRICS = ["epochs", "final_train_loss", "final_val_loss", "best_val_loss", "best_epoch",
                   "best_val_acc", "test_macro_f1"]


def dotted_value(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


# The optimizer settings each optimizer reads: a column of another one's setting stays empty
# (an Adadelta row has no beta1, an Adam row no rho).
OPTIMIZER_KEYS = {"adam": {"beta1", "beta2", "eps"}, "adamw": {"beta1", "beta2", "eps"},
                  "adadelta": {"rho", "eps"}, "sgd": {"momentum", "nesterov"}}


def applies(cfg: dict, dotted: str) -> bool:
    section, _, key = dotted.partition(".")
    if section != "optimizer" or key in ("name", "lr", "weight_decay"):
        return True
    used = OPTIMIZER_KEYS.get(dotted_value(cfg, "optimizer.name"))
    return used is None or key in used


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def _epoch_rows(run_dir: Path) -> list[dict[str, float]]:
    path = RunDir(run_dir).metrics
    return read_metrics(path) if path.is_file() else []


def run_metrics(run_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Every metric of the module docstring that the run folder allows."""
    m: dict[str, Any] = {}
    rows = _epoch_rows(run_dir)
    cfg = yaml.safe_load(RunDir(run_dir).config.read_text(encoding="utf-8"))
    train = [r.get("train_loss", math.nan) for r in rows]
    val = [r.get("val_loss", math.nan) for r in rows]
    steps = [r["loss"] for r in read_step_loss(RunDir(run_dir).step_loss)]
    m["epochs"] = len(rows)
    if steps:
        k = int(params.get("final_steps", 10))
        m["final_train_loss"], m["mean_train_loss"] = _mean(steps[-k:]), _mean(steps)
        m["steps"] = len(steps)
    elif rows:
        m["final_train_loss"], m["mean_train_loss"] = train[-1], _mean(train)
    if rows:
        m["final_val_loss"] = val[-1]
        best = min(range(len(val)), key=lambda i: val[i] if math.isfinite(val[i]) else math.inf)
        m["best_val_loss"], m["best_epoch"] = val[best], best + 1
        acc = [r.get("val_acc", math.nan) for r in rows]
        top = max(range(len(acc)), key=lambda i: acc[i] if math.isfinite(acc[i]) else -1)
        m["best_val_acc"], m["val_loss_at_best_acc"] = acc[top], val[top]
        first, last = params.get("window") or [1, len(rows)]
        m["mean_val_loss"] = _mean(val[int(first) - 1:int(last)])
        m["final_gap"] = val[-1] - train[-1]
        g = int(params.get("gap_epochs", 3))
        m["mean_gap"] = _mean([v - t for v, t in zip(val[-g:], train[-g:], strict=True)])
        m["sec_per_epoch"] = _mean([r.get("time_s", math.nan) for r in rows])
    o = cfg.get("optimizer", {})
    if o.get("name") == "adam":
        m["adam_bound"] = o["lr"] * (1 - o["beta1"]) / math.sqrt(1 - o["beta2"])
    test = RunDir(run_dir).test_metrics
    if test.is_file():
        t = json.loads(test.read_text(encoding="utf-8"))
        m["test_accuracy"], m["test_macro_f1"] = t.get("accuracy"), t.get("macro_f1")
        for code, pc in t.get("per_class", {}).items():
            m[f"f1_{code}"] = pc.get("f1")
        m.update(majority_baseline({c: v.get("support", 0)
                                    for c, v in t.get("per_class", {}).items()}))
    return m


def health_of(run_dir: Path) -> RunHealth:
    """Whether a run folder's model is degenerate (:func:`verdicts.run_health`): the scored
    checkpoint's test predictions (test_metrics.json), not the last epoch's validation."""
    test = RunDir(run_dir).test_metrics
    return run_health(json.loads(test.read_text(encoding="utf-8")) if test.is_file() else None)


def _sizes(run_dir: Path) -> tuple[int | None, int | None]:
    """(validation images, classes) of a run: its saved splits, else its test metrics' classes
    (a folder of raw files keeps no splits: its validation size is unknown, None)."""
    val = classes = None
    try:
        meta = json.loads((RunDir(run_dir).splits / "splits.json").read_text(encoding="utf-8"))
        val, classes = sum(meta["counts"]["val"].values()), len(meta["classes"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    if classes is None and RunDir(run_dir).test_metrics.is_file():
        test = json.loads(RunDir(run_dir).test_metrics.read_text(encoding="utf-8"))
        classes = len(test.get("classes") or test.get("per_class") or []) or None
    return val, classes


def point_runs(out: Path, record: dict) -> list[dict[str, Any]]:
    """The record's points, each with ``runs`` as (run name, run folder) pairs: its own under
    OUT/runs/, a shared point's (``shared: STUDY/POINT``) every run the other study's point has,
    in the other study's folder beside OUT (OUT/../STUDY/runs/)."""
    points = []
    for p in record["points"]:
        if not p.get("shared"):
            runs = [(r["name"], out / "runs" / r["name"]) for r in p["runs"]]
        else:
            runs = shared_runs(out, p)
        points.append({**p, "runs": runs})
    return points


def shared_runs(out: Path, point: dict) -> list[tuple[str, Path]]:
    """A shared point's runs in the other study's folder, each checked against the config the
    point would have trained (every key but the run's name and its seeds')."""
    study, _, name = point["shared"].partition("/")
    other = out.parent / study
    try:
        record = json.loads((other / "study.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise HemacnnError(f"point {point['name']} of {out} is shared from {point['shared']}, "
                           f"but {other} holds no study (no study.json): run study {study} "
                           f"into {other} first") from None
    mine = [p for p in record.get("points", []) if p["name"] == name and not p.get("shared")]
    if not mine:
        raise HemacnnError(f"point {point['name']} of {out} is shared from {point['shared']}, "
                           f"but study {study} in {other} has no point {name!r}")
    runs = [(r["name"], other / "runs" / r["name"]) for r in mine[0]["runs"]]
    want = point.get("config")
    # The first run stands for the point (the other study's own sweep keeps its runs' configs
    # one but the seeds: a run folder trained with another config stops it).
    if want is not None and runs and RunDir(runs[0][1]).config.is_file():
        got = yaml.safe_load(RunDir(runs[0][1]).config.read_text(encoding="utf-8"))
        check_same_config(want, got, f"point {point['name']} of {out}", runs[0][1])
    return runs


SEED_KEYS = ("name", "seed", "data.split_seed")
"""What may differ between a point's runs and a shared point's (its name and seeds); a key only
one config holds (added to the schema since, with its default) is not compared either."""


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_same_config(want: dict, got: dict, what: str, run_dir: Path) -> None:
    """A one-line error naming both when a shared run was trained with another config."""
    a, b = _flat(want), _flat(got)
    diff = sorted(k for k in set(a) & set(b) if k not in SEED_KEYS and a[k] != b[k])
    if diff:
        k = diff[0]
        raise HemacnnError(f"{what} is shared from {run_dir}, but that run was trained with "
                           f"another config: {k} is {b.get(k)!r} there and {a.get(k)!r} here "
                           f"({len(diff)} key(s) differ); share a point with the same config")


def seed_rows(out: Path, record: dict) -> list[dict[str, Any]]:
    """One row per finished run: point, seed, the study's columns, every metric, health."""
    params = record.get("summary", {})
    rows = []
    for p in point_runs(out, record):
        for k, (name, run_dir) in enumerate(p["runs"]):
            if not RunDir(run_dir).finished:
                continue
            cfg = yaml.safe_load(RunDir(run_dir).config.read_text(encoding="utf-8"))
            row: dict[str, Any] = {"point": p["name"], "run": name, "seed_index": k,
                                   "seed": cfg.get("seed")}
            if p.get("shared"):
                row["shared_from"] = p["shared"].partition("/")[0]
            for col, dotted in record.get("columns", {}).items():
                row[col] = dotted_value(cfg, dotted) if applies(cfg, dotted) else None
            row.update(run_metrics(run_dir, params))
            health = health_of(run_dir)
            row["degenerate"] = int(health.degenerate)
            row["degenerate_why"] = "; ".join(health.reasons)
            row["unpredicted"] = " ".join(health.unpredicted)
            val_images, n_classes = _sizes(run_dir)
            marks = learning_marks(row.get("best_val_acc"), n_classes, val_images)
            if marks:  # (a column only where some run has one: committed summaries unchanged)
                row["marks"] = "; ".join(marks)
            rows.append(row)
    return rows


def _change_pct(rows: list[dict[str, Any]], params: dict[str, Any]) -> None:
    """% change of the ``change_of`` metric (its mean over seeds) against the first point."""
    of = params.get("change_of")
    if of and rows and rows[0].get(of):
        for row in rows:
            if row.get(of) is not None:
                row["change_pct"] = 100.0 * (row[of] / rows[0][of] - 1.0)


_NOT_METRICS = {"point", "run", "seed_index", "seed", "degenerate", "degenerate_why", "marks",
                "unpredicted", "shared_from"}


def summary_rows(out: Path, record: dict,
                 seeds: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per point with a finished run: point, the study's columns, ``seeds``, every
    metric's mean over seeds (with ``_sd`` and ``_ci95`` when some point has several seeds)
    and ``degenerate_seeds``. ``seeds``: the :func:`seed_rows` (read when not given)."""
    seeds = seed_rows(out, record) if seeds is None else seeds
    counts: dict[str, int] = {}
    for r in seeds:
        counts[r["point"]] = counts.get(r["point"], 0) + 1
    spread = any(n > 1 for n in counts.values())
    columns = list(record.get("columns", {}))
    rows = []
    for p in record["points"]:
        mine = [r for r in seeds if r["point"] == p["name"]]
        if not mine:
            continue
        row: dict[str, Any] = {"point": p["name"], **{c: mine[0].get(c) for c in columns},
                               "seeds": len(mine)}
        keys: list[str] = []
        for r in mine:
            keys += [k for k in r if k not in keys and k not in _NOT_METRICS
                     and k not in columns]
        for key in keys:
            xs = [r[key] for r in mine if isinstance(r.get(key), int | float)
                  and math.isfinite(r[key])]
            if not xs:
                continue
            mean, sd, half = interval(xs)
            row[key] = xs[0] if len(xs) == 1 else mean
            if spread:
                row[f"{key}_sd"], row[f"{key}_ci95"] = sd, half
        row["degenerate_seeds"] = sum(r["degenerate"] for r in mine)
        if mine[0].get("shared_from"):
            row["shared_from"] = mine[0]["shared_from"]
        rows.append(row)
    _change_pct(rows, record.get("summary", {}))
    return rows


def _cell(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    if isinstance(v, list):
        return " ".join(map(str, v))
    return str(v)


def table_columns(record: dict, rows: list[dict[str, Any]]) -> list[str]:
    """The summary.md table's columns: point, study columns, listed metrics, paper columns."""
    params = record.get("summary", {})
    metrics = list(params.get("metrics") or DEFAULT_METRICS)
    if params.get("change_of") and "change_pct" not in metrics:
        metrics.append("change_pct")
    if params.get("per_class_f1"):
        metrics += sorted(k for k in (rows[0] if rows else {}) if k.startswith("f1_")
                          and not k.endswith(("_sd", "_ci95")))  # those are a cell's ±
    cols = ["point", *record.get("columns", {})]
    for metric in metrics:
        cols.append(metric)
        cols += [f"paper {metric}" for ref in record.get("paper", [])
                 if ref.get("column") == metric]
    return cols


def _with_paper(record: dict, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        row = dict(row)
        for ref in record.get("paper", []):
            value = (ref.get("values") or {}).get(row["point"])
            if value is not None:
                row[f"paper {ref['column']}"] = value
        out.append(row)
    return out


# What a study's summary and figures are derived from: each run's small raw files (kilobytes,
# no checkpoints), kept in the repository under docs/results/<study>/runs/ beside study.json.
RAW_FILES = RunDir.RAW_FILES


def copy_raw_files(out: str | Path, dest: str | Path) -> list[Path]:
    """Copy study.json and every run's :data:`RAW_FILES` from study folder ``out`` into
    ``dest`` (its runs/ replaced), so ``hemacnn sweep --report DEST`` re-derives the summary."""
    out, dest = Path(out), Path(dest)
    record = json.loads((out / "study.json").read_text(encoding="utf-8"))
    shutil.rmtree(dest / "runs", ignore_errors=True)
    copied = [Path(shutil.copy2(out / "study.json", _mkdir(dest) / "study.json"))]
    for p in record["points"]:
        for run in [] if p.get("shared") else p["runs"]:  # a shared point's are elsewhere
            src = out / "runs" / run["name"]
            for name in RAW_FILES:
                if (src / name).is_file():
                    target = _mkdir(dest / "runs" / run["name"]) / name
                    copied.append(Path(shutil.copy2(src / name, target)))
    return copied


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_summary(out: str | Path) -> list[Path]:
    """Write OUT/summary.csv, OUT/summary.md and the study's figures; returns the paths."""
    out = Path(out)
    record = json.loads((out / "study.json").read_text(encoding="utf-8"))
    seeds = seed_rows(out, record)
    rows = summary_rows(out, record, seeds)
    claims = claim_results(record, seeds)
    write_text(out / "summary.csv", _csv(rows, ["point"]))
    write_text(out / "summary_seeds.csv", _csv(seeds, ["point", "run"]))
    written = [out / "summary.csv", out / "summary_seeds.csv"]
    if claims:
        run_set, paper_set = settings_text(out, record, claims)
        write_text(out / "claims.csv", _csv([
            {"id": r.row_id, "section": c.claim.section,
             "claim": c.claim.text + (f" [{r.label}]" if r.label else ""),
             "verdict": r.verdict.value, "detail": r.detail, "seeds": r.seeds,
             "setting_run": run_set[c.claim.id], "setting_paper": paper_set[c.claim.id]}
            for c in claims for r in (c, *c.rows)], ["id"]))
        written.append(out / "claims.csv")
    figures = draw_figures(out, record, rows, seeds)
    write_text(out / "summary.md", render_markdown(out, record, rows, figures, seeds, claims))
    extra: list[Path] = []
    runs = [run_folder(out, r) for r in seeds]
    # The report needs each run's model card and predictions: not in a folder of raw files.
    if record.get("summary", {}).get("report") and runs and all(
            RunDir(r).card.is_file() for r in runs):
        extra = write_report(runs, out=out / "report.md")
    return [*written, out / "summary.md", *figures, *extra]


def _value(v: Any) -> str:
    return "none" if v == [] else _cell(v)


def _short(dotted: str) -> str:
    return dotted.rsplit(".", 1)[-1]


def _setting(values: dict[str, dict[str, Any]], points: list[str], keys: list[str]) -> str:
    """Settings in words: a key the points share once, a key they differ in point by point
    (``values``: point -> key -> value; a point without values: not in this profile)."""
    here = [p for p in points if p in values]
    if not here or not keys:
        return ""
    parts = []
    for key in keys:
        vals = [values[p].get(key) for p in here]
        if all(v is None for v in vals):
            continue
        if len({json.dumps(v) for v in vals}) == 1:
            parts.append(f"{_short(key)} {_value(vals[0])}")
        else:
            parts.append(f"{_short(key)} " + ", ".join(f"{_value(v)} ({p})"
                                                        for p, v in zip(here, vals, strict=True)
                                                        if v is not None))
    absent = [p for p in points if p not in values]
    if absent:
        parts.append(f"no such point: {', '.join(absent)}")
    return "; ".join(parts)


def settings_text(out: Path, record: dict, claims: list[ClaimResult]
                  ) -> tuple[dict[str, str], dict[str, str]]:
    """Per claim id: the settings (the study's ``settings`` keys) its points were run with,
    read from each point's first run's config, and the paper profile's (study.json's
    ``paper_settings``, recorded by the sweep)."""
    keys = list(record.get("settings") or [])
    run_values: dict[str, dict[str, Any]] = {}
    for p in point_runs(out, record):
        for _, run_dir in p["runs"]:
            if RunDir(run_dir).config.is_file():
                cfg = yaml.safe_load(RunDir(run_dir).config.read_text(encoding="utf-8"))
                run_values[p["name"]] = {k: dotted_value(cfg, k) for k in keys
                                         if applies(cfg, k)}
                break
    paper = record.get("paper_settings") or {}
    run_set, paper_set = {}, {}
    for c in claims:
        points = c.claim.points()
        run_set[c.claim.id] = _setting(run_values, points, keys)
        paper_set[c.claim.id] = _setting(paper, points, keys)
    return run_set, paper_set


def _csv(rows: list[dict[str, Any]], first: list[str]) -> str:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys or first, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def _best_lines(record: dict, rows: list[dict[str, Any]]) -> list[str]:
    params = record.get("summary", {})
    metric, by = params.get("best_metric"), params.get("best_by")
    if not metric or not rows:
        return []
    groups: dict[Any, list[dict]] = {}
    for row in rows:
        if row.get(metric) is not None:
            groups.setdefault(row.get(by) if by else "all", []).append(row)
    lines = []
    for group, members in groups.items():
        best = min(members, key=lambda r: r[metric])
        lines.append(f"- lowest {metric}{f' ({by} {group})' if by else ''}: "
                     f"**{best['point']}** ({_cell(best[metric])})")
    return lines


def _mean_cell(row: dict[str, Any], col: str) -> str:
    half = row.get(f"{col}_ci95")
    if isinstance(half, float) and math.isfinite(half):
        mean = row.get(col)
        if isinstance(mean, float) and half < 1e-9 * max(1.0, abs(mean)):
            half = 0.0  # seeds that agree exactly, up to rounding
        return f"{_cell(mean)} ± {_cell(half, 2)}"
    return _cell(row.get(col))


def _claim_lines(claims: list[ClaimResult], run_set: dict[str, str],
                 paper_set: dict[str, str]) -> list[str]:
    if not claims:
        return []
    lines = ["## The paper's claims", "", f"Rule: {RULE}.", "",
             "| claim | section | the paper | metric | ours | verdict | run with | the paper's "
             "setting |", "|---|---|---|---|---|---|---|---|"]
    for c in claims:
        for r in (c, *c.rows):
            lines.append(f"| {r.row_id} | {c.claim.section} | {c.claim.text} | "
                         f"{r.label or c.claim.metric_text()} | {r.detail} | "
                         f"**{r.verdict.value}** | {run_set[c.claim.id]} | "
                         f"{paper_set[c.claim.id]} |")
    return [*lines, ""]


def _degenerate_lines(seeds: list[dict[str, Any]]) -> list[str]:
    bad = [r for r in seeds if r["degenerate"]]
    lines = ([f"{len(bad)} of {len(seeds)} runs are degenerate on the scored checkpoint's test "
              "predictions (claims that need them are not tested unless they say why not):", "",
              *[f"- {r['run']}: {r['degenerate_why']}" for r in bad], ""] if bad else
             ["No run is degenerate (on the scored checkpoint's test predictions each predicts "
              "more than half of the classes and beats the majority-class predictor's "
              "macro-F1).", ""] if seeds else [])
    missing: dict[str, list[str]] = {}
    for r in seeds:
        for code in (r.get("unpredicted") or "").split():
            missing.setdefault(code, []).append(r["run"])
    for code, runs in sorted(missing.items()):
        lines += [f"{len(runs)} of {len(seeds)} runs never predict {code} on test: "
                  f"{', '.join(runs)}.", ""]
    shared = sorted({r["shared_from"] for r in seeds if r.get("shared_from")})
    if shared:
        points = sorted({r["point"] for r in seeds if r.get("shared_from")})
        lines += [f"Points {', '.join(points)} are shared: their runs are {', '.join(shared)}'s "
                  f"(the same configs but the run name; counted there, not here).", ""]
    return lines


def render_markdown(out: Path, record: dict, rows: list[dict[str, Any]],
                    figures: list[Path], seeds: list[dict[str, Any]] | None = None,
                    claims: list[ClaimResult] | None = None) -> str:
    """summary.md: what was run, the table (paper's figures beside ours; mean ± 95 % interval
    over seeds), degenerate runs, the claims' verdicts, best points, figures."""
    params = record.get("summary", {})
    seeds = seeds or []
    lines = [f"# Study {record['study']} (profile {record['profile']})", ""]
    if record.get("title"):
        lines += [record["title"], ""]
    if record.get("profile_note"):
        lines += [f"Profile `{record['profile']}`: {record['profile_note']}", ""]
    if record.get("command"):
        lines += ["Command:", "", f"    {record['command']}", ""]
    missing = [p["name"] for p in record["points"] if p["name"] not in {r["point"] for r in rows}]
    lines.append(f"{len(rows)} of {len(record['points'])} points finished"
                 + (f"; not finished: {', '.join(missing)}" if missing else "") + ".")
    n_seeds = sorted({r["seeds"] for r in rows})
    if n_seeds == [1]:
        lines.append("One seed per point: no interval over seeds, so no difference between "
                     "points can be told from seed noise and no claim can be decided.")
    elif n_seeds:
        lines.append(f"Seeds per point: {', '.join(map(str, n_seeds))} (the same split, other "
                     "initial weights and batch order); a cell is the mean ± the half-width of "
                     "its 95% t-interval over seeds; every run is in summary_seeds.csv.")
    if params.get("window"):
        lines.append(f"mean_val_loss averages the validation loss over epochs "
                     f"{params['window'][0]}-{params['window'][1]}.")
    if any("steps" in r for r in rows):
        lines.append(f"Training losses are per mini-batch (step_loss.csv): final = mean of the "
                     f"last {params.get('final_steps', 10)} mini-batches, mean = over all.")
    lines.append("")
    cols = table_columns(record, rows)
    table = _with_paper(record, rows)
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for row in table:
        lines.append("| " + " | ".join(_mean_cell(row, c) for c in cols) + " |")
    lines.append("")
    lines += _degenerate_lines(seeds)
    lines += mark_lines(seeds)
    if claims:
        lines += _claim_lines(claims, *settings_text(out, record, claims))
    best = _best_lines(record, rows)
    if best:
        lines += best + [""]
    sources = [f"- `paper {r['column']}`: {r.get('source', '')}" for r in record.get("paper", [])]
    if sources:
        lines += ["Published figures (Whitehead & Ramirez):", "", *sources, ""]
    if record.get("notes"):
        lines += ["What the paper reports:", "", *[f"- {n}" for n in record["notes"]], ""]
    for fig in figures:
        lines += [f"![{fig.stem}]({fig.relative_to(out).as_posix()})", ""]
    lines.append("All columns of every point are in summary.csv; each run folder is under runs/.")
    return "\n".join(lines) + "\n"
