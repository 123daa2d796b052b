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
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import yaml

from hemacnn.atomic import write_text

DEFAULT_METRICS = ["epochs", "final_train_loss", "final_val_loss", "best_val_loss", "best_epoch",
                   "best_val_acc", "test_macro_f1"]


def _get(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def _epoch_rows(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()}
                for r in csv.DictReader(fh)]


def run_metrics(run_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Every metric of the module docstring that the run folder allows."""
    from hemacnn.steploss import read_step_loss  # imports Lightning: only when summarising

    m: dict[str, Any] = {}
    rows = _epoch_rows(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    train = [r.get("train_loss", math.nan) for r in rows]
    val = [r.get("val_loss", math.nan) for r in rows]
    steps = [r["loss"] for r in read_step_loss(run_dir / "step_loss.csv")]
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
    test = run_dir / "test_metrics.json"
    if test.is_file():
        t = json.loads(test.read_text(encoding="utf-8"))
        m["test_accuracy"], m["test_macro_f1"] = t.get("accuracy"), t.get("macro_f1")
        for code, pc in t.get("per_class", {}).items():
            m[f"f1_{code}"] = pc.get("f1")
    return m


def summary_rows(out: Path, record: dict) -> list[dict[str, Any]]:
    """One row per finished point: point, the study's columns, every metric."""
    params = record.get("summary", {})
    rows = []
    for p in record["points"]:
        run_dir = out / "runs" / p["name"]
        if not (run_dir / "test_metrics.json").is_file():
            continue
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        row: dict[str, Any] = {"point": p["name"]}
        for col, dotted in record.get("columns", {}).items():
            row[col] = _get(cfg, dotted)
        row.update(run_metrics(run_dir, params))
        rows.append(row)
    of = params.get("change_of")
    if of and rows and rows[0].get(of):
        for row in rows:
            if row.get(of) is not None:
                row["change_pct"] = 100.0 * (row[of] / rows[0][of] - 1.0)
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
        metrics += sorted(k for k in (rows[0] if rows else {}) if k.startswith("f1_"))
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


def write_summary(out: str | Path) -> list[Path]:
    """Write OUT/summary.csv, OUT/summary.md and the study's figures; returns the paths."""
    from hemacnn.studies.figures import draw_figures

    out = Path(out)
    record = json.loads((out / "study.json").read_text(encoding="utf-8"))
    rows = summary_rows(out, record)
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys or ["point"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(out / "summary.csv", buf.getvalue())
    figures = draw_figures(out, record, rows)
    write_text(out / "summary.md", render_markdown(out, record, rows, figures))
    extra: list[Path] = []
    if record.get("summary", {}).get("report") and rows:
        from hemacnn.report import write_report  # every run beside the published tables

        extra = write_report([out / "runs" / r["point"] for r in rows], out=out / "report.md")
    return [out / "summary.csv", out / "summary.md", *figures, *extra]


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


def render_markdown(out: Path, record: dict, rows: list[dict[str, Any]],
                    figures: list[Path]) -> str:
    """summary.md: what was run, the table (paper's figures beside ours), best points, figures."""
    params = record.get("summary", {})
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
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in cols) + " |")
    lines.append("")
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
