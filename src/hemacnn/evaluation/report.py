"""Comparison report: runs beside the published figures, as Markdown and self-contained HTML.

Everything comes from files a run already holds (evaluation JSON or saved predictions,
metrics.csv): the report never trains or predicts. The document is built once as a list of
blocks and rendered twice, so the Markdown and the HTML always say the same thing.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.atomic import write_text
from hemacnn.card import read_card
from hemacnn.classes import is_matek_set
from hemacnn.data.splits import load_splits
from hemacnn.errors import HemacnnError, command_line
from hemacnn.evaluation.evaluate import SPLITS
from hemacnn.evaluation.plots import (
    plot_confusion,
    plot_pr_curves,
    plot_reliability,
    plot_training_curves,
)
from hemacnn.evaluation.published import comparability, published_for, published_macro_f1
from hemacnn.inference.loading import is_ensemble, read_ensemble
from hemacnn.rundir import RunDir
from hemacnn.scoring.classmap import load_class_map
from hemacnn.scoring.mapped import report_blocks
from hemacnn.scoring.metrics import compute_metrics

# A block: ("h1"|"h2"|"h3"|"p", text), ("ul", [items]), ("table", head, rows) or
# ("img", png_path, caption).
Block = tuple


@dataclass
class RunInfo:
    """What the report needs from one run folder."""

    path: Path
    name: str
    card: dict[str, Any]
    evaluation: dict[str, Any] | None
    split_counts: dict[str, int]
    split_desc: str | None
    dropped: dict[str, int] | None = None


def _load_evaluation(run: Path) -> dict[str, Any] | None:
    """The test evaluation: saved JSON, else recomputed from saved predictions, else None."""
    rd = RunDir(run)
    for p in (rd.evaluation("test"), rd.evaluation("test_tta"), rd.test_metrics):
        if p.is_file():
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if "per_class" in data and "tolerant" in data:
                return data
    for name in ("test", "test_tta"):
        npz = rd.predictions(name)
        if npz.is_file():
            with np.load(npz) as z:
                return {"name": name, **compute_metrics(z["y_true"], z["probs"],
                                                        [str(c) for c in z["classes"]])}
    return None


def load_run(path: str | os.PathLike) -> RunInfo:
    """Read a run folder's card, test evaluation and split sizes."""
    path = Path(path)
    card = read_card(path)
    try:
        splits = load_splits(RunDir(path).splits)
    except HemacnnError:  # a report still describes a run whose splits are gone
        counts, desc, dropped = dict.fromkeys(SPLITS, 0), None, None
    else:
        dropped = splits.extra.get("dropped_classes") or None
        counts = {s: len(splits.split(s)) for s in SPLITS}
        desc = (f"seeded stratified split (seed {splits.seed}): test {splits.test_fraction} "
                f"per class, validation {splits.val_fraction} of the rest")
        if splits.extra.get("train_fraction"):
            desc += f"; training on {splits.extra['train_fraction']} of the training images"
    return RunInfo(path, path.resolve().name, card, _load_evaluation(path), counts, desc,
                   dropped)


# Three decimals: a test split of hundreds of images resolves about 0.001-0.01, and a fourth
# decimal on a group of five images would only suggest a precision that is not there.
DIGITS = 3


def _f(v: float | None, d: int = DIGITS) -> str:
    return "–" if v is None else f"{v:.{d}f}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{ci[0]:.{DIGITS}f}–{ci[1]:.{DIGITS}f}]"


def _boot(e: dict[str, Any], key: str) -> str:
    """The value with its bootstrap 95% interval, as `hemacnn evaluate` prints them."""
    hci = e.get("headline_ci") or {}
    return _f(e[key]) + _ci(hci.get(key))


def _boot_note(runs: list[RunInfo]) -> str | None:
    """How the headline intervals were drawn (from the first run that has them)."""
    for r in runs:
        hci = (r.evaluation or {}).get("headline_ci")
        if hci:
            return (f"Accuracy and macro F1 in brackets: {round(100 * hci['level'])}% "
                    f"{hci['method']} intervals ({hci['resamples']:,} resamples of the test "
                    "images), as `hemacnn evaluate` prints them.")
    return None


def headline_rows(runs: list[RunInfo]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the headline-metrics table."""
    head = ["run", "model", "classes", "test images", "accuracy", "balanced acc.", "macro F1",
            "weighted F1", "tolerant macro F1", "ECE"]
    rows = []
    for r in runs:
        arch = r.card.get("arch", {})
        width = (arch.get("options") or {}).get("width")
        model = f"{arch.get('name', '?')} {r.card.get('input_size')}px" + (
            f" w{width:g}" if width not in (None, 1, 1.0) else "")
        e = r.evaluation
        if e is None:
            rows.append([r.name, model, ", ".join(r.card["classes"]), "not evaluated"]
                        + ["–"] * 6)
            continue
        rows.append([r.name, model, ", ".join(e["classes"]), str(e["n"]),
                     _boot(e, "accuracy"), _f(e["balanced_accuracy"]), _boot(e, "macro_f1"),
                     _f(e["weighted_f1"]),
                     _f(e["tolerant"]["macro_f1"]), _f(e["calibration"]["ece"])])
    return head, rows


def compare_runs(run_dirs: list[str | os.PathLike]) -> str:
    """One plain-text table of the headline metrics of several runs."""
    if not run_dirs:
        raise HemacnnError("give at least one run folder")
    head, rows = headline_rows([load_run(p) for p in run_dirs])
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _run_blocks(r: RunInfo, figs: dict[str, Path]) -> list[Block]:
    card, e = r.card, r.evaluation
    arch = card.get("arch", {})
    n_images = sum(r.split_counts.values())
    blocks: list[Block] = [("h2", f"Run {r.name}")]
    blocks.append(("ul", [
        f"model: {arch.get('name')} at {card.get('input_size')} px, options "
        f"{json.dumps(arch.get('options') or {})}; seed {card.get('seed')}",
        f"classes: {', '.join(card['classes'])}",
        f"data: {card.get('data_root')} ({n_images:,} images in the splits: train "
        f"{r.split_counts['train']:,}, validation {r.split_counts['val']:,}, test "
        f"{r.split_counts['test']:,})",
        f"split: {r.split_desc or 'as saved in splits/'}",
    ] + ([_dropped_text(r.dropped)] if r.dropped else []) + _members_text(r.path)))
    if e is None:
        blocks.append(("p", "This run has no test evaluation yet (no evaluation_test.json or "
                            "predictions_test.npz): run `hemacnn evaluate RUN_DIR` first."))
    else:
        blocks += _metric_blocks(r, e, n_images)
    for key, title in (("curves", "Training and validation loss and accuracy per epoch"),
                       ("pr", "Per-class validation precision and recall per epoch"),
                       ("confusion", "Confusion matrix, counts (test)"),
                       ("confusion_norm", "Confusion matrix, row-normalised (test)"),
                       ("reliability", "Reliability diagram (test)")):
        if key in figs:
            blocks.append(("img", figs[key], title))
    return blocks


def _members_text(run: Path) -> list[str]:
    """For an ensemble folder: its members and weights (ensemble_members.json's figures)."""
    if not is_ensemble(run):
        return []
    figures = {}
    summary = run / "ensemble_members.json"
    if summary.is_file():
        rows = json.loads(summary.read_text(encoding="utf-8"))["members"]
        figures = {Path(m["run"]).resolve(): m["macro_f1"] for m in rows}
    items = []
    for m in read_ensemble(run)["members"]:
        f1 = figures.get(Path(m["path"]).resolve())
        items.append(f"{m['run']} (weight {m['weight']:.3f}"
                     + (f", macro F1 alone {f1:.3f} on the same test images)" if f1 is not None
                        else ")"))
    return ["ensemble of: " + "; ".join(items)]


def _dropped_text(dropped: dict[str, int]) -> str:
    return ("left out (too few images for every split, data.rare_classes=drop): "
            + ", ".join(f"{c} ({n} images)" for c, n in dropped.items()))


def _groups_text(groups: dict[str, list[str]]) -> str:
    if not groups:
        return " (same as strict: no tolerance group joins two of these classes)"
    return " (tolerance groups: " + "; ".join(f"{c}~{'/'.join(g)}" for c, g in groups.items()) + ")"


def _metric_blocks(r: RunInfo, e: dict[str, Any], n_images: int) -> list[Block]:
    blocks: list[Block] = [("h3", "Test results (Table 6 layout, 95% Wilson intervals)")]
    rows = [[c, v["name"], _f(v["precision"]) + _ci(v["precision_ci"]),
             _f(v["recall"]) + _ci(v["recall_ci"]), _f(v["f1"]), str(v["support"])]
            for c, v in e["per_class"].items()]
    blocks.append(("table", ["class", "name", "precision", "recall", "F1", "support"], rows))
    tol = e["tolerant"]
    blocks.append(("p", f"Strict: accuracy {_boot(e, 'accuracy')}, balanced accuracy "
                        f"{_f(e['balanced_accuracy'])}, macro F1 {_boot(e, 'macro_f1')}, "
                        f"weighted F1 {_f(e['weighted_f1'])}; ECE "
                        f"{_f(e['calibration']['ece'])}. "
                        f"Tolerant: accuracy {_f(tol['accuracy'])}, macro F1 "
                        f"{_f(tol['macro_f1'])}" + _groups_text(tol["groups"]) + "."))
    for note in e.get("notes", []):
        blocks.append(("p", f"Note: {note}."))
    # Published figures are Matek's classes on Matek's images: another dataset gets none.
    pubs = published_for(e["classes"]) if is_matek_set(e["classes"]) else []
    if not pubs:
        return blocks
    strict_pubs = [p for p in pubs if not p.tolerant]
    blocks.append(("h3", "Beside the published figures: F1 (compared first)"))
    head = ["class", "this run"] + [p.short for p in strict_pubs]
    rows = [[c, _f(v["f1"])] + [_f(p.f1(c)) for p in strict_pubs]
            for c, v in e["per_class"].items()]
    rows.append([f"macro F1 ({len(e['classes'])} classes)", _f(e["macro_f1"])]
                + [_f(published_macro_f1(p, e["classes"])) for p in strict_pubs])
    blocks.append(("table", head, rows))
    blocks.append(("p", "Columns: " + "; ".join(f"{p.short} = {p.label}" for p in pubs)
                   + ". Matek's F1 is computed from its mean precision and recall. A study's "
                   "macro F1 is the mean of its F1 over this run's classes, shown only when it "
                   "reports all of them."))
    blocks.append(("h3", "Precision / recall beside the published figures"))
    head = ["class", "this run P / R"] + [
        p.short + (" pair (order uncertain)" if p.pr_order == "unknown" else " P / R")
        for p in strict_pubs]
    rows = []
    for c, v in e["per_class"].items():
        row = [c, f"{_f(v['precision'])} / {_f(v['recall'])}"]
        for p in strict_pubs:
            pc = p.per_class.get(c)
            if pc is None:
                row.append("–")
            elif "pair" in pc:
                row.append(" / ".join(_f(x) for x in pc["pair"]))
            else:
                row.append(f"{_f(pc.get('precision'))} / {_f(pc.get('recall'))}")
        rows.append(row)
    blocks.append(("table", head, rows))
    tol_pubs = [p for p in pubs if p.tolerant]
    if tol_pubs:
        blocks.append(("h3", "Tolerant precision / recall beside Matek et al. 2021"))
        head = ["class", "this run tolerant P / R"] + [p.short + " P / R" for p in tol_pubs]
        rows = [[c, f"{_f(v['precision'])} / {_f(v['recall'])}"]
                + [(f"{_f(p.per_class[c]['precision'])} / {_f(p.per_class[c]['recall'])}"
                    if c in p.per_class else "–") for p in tol_pubs]
                for c, v in e["tolerant"]["per_class"].items()]
        rows.append([f"macro F1 ({len(e['classes'])} classes)", _f(e["tolerant"]["macro_f1"])]
                    + [_f(published_macro_f1(p, e["classes"])) for p in tol_pubs])
        blocks.append(("table", head, rows))
    blocks.append(("h3", "Is the comparison like for like?"))
    items = []
    for p in pubs:
        reasons = comparability(p, e["classes"], n_images, r.split_desc)
        verdict = ("like for like." if not reasons else "NOT like for like. "
                   + " ".join(x[0].upper() + x[1:] + "." for x in reasons))
        items.append(f"{p.short} ({p.label}): {verdict}" + (f" Note: {p.note}" if p.note else ""))
    blocks.append(("ul", items))
    blocks.append(("p", "Sources:"))
    blocks.append(("ul", [f"{p.short}: {p.citation.strip()}" for p in pubs]))
    return blocks


def _figures(r: RunInfo, fig_dir: Path, prefix: str) -> dict[str, Path]:
    figs: dict[str, Path] = {}
    csv_path = RunDir(r.path).metrics
    if csv_path.is_file():
        try:
            figs["curves"] = plot_training_curves(csv_path, fig_dir / f"{prefix}_curves.png")
            figs["pr"] = plot_pr_curves(csv_path, fig_dir / f"{prefix}_pr.png")
        except HemacnnError:
            pass  # no epoch rows yet: the report says so by leaving the figures out
    e = r.evaluation
    if e is not None:
        cm = e["confusion_matrix"]["counts"]
        split = e.get("split") or e.get("name")
        figs["confusion"] = plot_confusion(cm, e["classes"], fig_dir / f"{prefix}_cm.png",
                                           split=split)
        figs["confusion_norm"] = plot_confusion(cm, e["classes"],
                                                fig_dir / f"{prefix}_cm_norm.png", normalise=True,
                                                split=split)
        figs["reliability"] = plot_reliability(e["calibration"]["bins"],
                                               fig_dir / f"{prefix}_reliability.png",
                                               ece=e["calibration"]["ece"], split=split)
    return figs


# Both renderers walk the same blocks; the HTML is not converted from the Markdown (by the
# `markdown` package, say): a converter knows no scrolling table wrapper, no numeric/text cell
# classes and no figures embedded as data URIs (the page must stand alone), and would escape
# differently, so every report.html would change for two 25-line loops saved.
def _md_cell(s: str) -> str:
    return s.replace("|", "\\|")


def render_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown text; images are linked relative to ``base`` (the report's folder)."""
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            out.append(b[1])
        elif kind == "ul":
            out.append("\n".join(f"- {x}" for x in b[1]))
        elif kind == "table":
            head, rows = b[1], b[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |",
                     "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{b[2]}]({Path(os.path.relpath(b[1], base)).as_posix()})")
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
.table-wrap { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
td { white-space: nowrap; }
/* Headers and text cells (class lists, run names) wrap, so a table fits 1280 px screens. */
th { white-space: normal; }
td.text { white-space: normal; overflow-wrap: anywhere; min-width: 6em; }
th { background: #f0f3f7; }
figure { margin: 1em 1em 1em 0; display: inline-block; vertical-align: top; }
img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
h2 { border-top: 2px solid #ddd; padding-top: .6em; }
"""


# A cell of figures ("0.940 [0.890–0.980]", "12", "0.5 / 0.7"): kept on one line.
_NUMBERS = re.compile(r"^[-–\d.,\[\] /%]*$")


def render_html(blocks: list[Block], title: str) -> str:
    """A self-contained HTML page: every figure embedded as a base64 PNG data URI."""
    esc = html.escape
    body = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{esc(b[1])}</{kind}>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(
                f"<td>{esc(c)}</td>" if _NUMBERS.match(c) else f'<td class="text">{esc(c)}</td>'
                for c in row) + "</tr>" for row in b[2])
            # A wide table (many runs or columns) scrolls inside the page, never past its edge.
            body.append(f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
                        f"<tbody>{rows}</tbody></table></div>")
        elif kind == "img":
            data = base64.b64encode(Path(b[1]).read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{esc(b[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(b[2])}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}'
            f"</title><style>{CSS}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _mapped_blocks(r: RunInfo, map_name: str) -> list[Block]:
    """The run's saved evaluations of another dataset through the map called ``map_name``."""
    found = []
    for path in sorted(r.path.glob("evaluation_*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and (data.get("class_map") or {}).get("name") == map_name:
            found += report_blocks(data)
    evaluate = command_line("evaluate", r.path, "--data", "DIR", "--class-map", "MAP")
    return found or [("p", f"{r.name}: no evaluation through class map {map_name} yet; run "
                           f"`{evaluate}` first.")]


def write_report(run_dirs: list[str | os.PathLike], out: str | os.PathLike | None = None,
                 class_map: str | os.PathLike | None = None) -> list[Path]:
    """Write report.md (default: in the first run) and report.html beside it; return both.

    With ``class_map`` each run's saved evaluations of another dataset through that map are
    added (the in-domain / other-dataset table of :func:`hemacnn.scoring.classmap.report_blocks`).
    """
    if not run_dirs:
        raise HemacnnError("give at least one run folder")
    map_name = None
    if class_map is not None:
        map_name = load_class_map(class_map).name
    runs = [load_run(p) for p in run_dirs]
    md_path = Path(out) if out else runs[0].path / "report.md"
    if md_path.suffix.lower() != ".md":
        raise HemacnnError(f"--out {md_path} should be a .md file (the HTML goes beside it)")
    fig_dir = md_path.parent / f"{md_path.stem}_files"
    title = "hemacnn report: " + ", ".join(r.name for r in runs)
    intro = ("Per-class results on each run's held-out test split, beside the published "
             "figures for the same classes: Whitehead & Ramirez's MV3 (Table 6) and VGG16 "
             "(Table 8), and Matek et al. 2021 (Table 1, strict and tolerant). "
             if any(is_matek_set(r.card["classes"]) for r in runs) else
             "Per-class results on each run's held-out test split (no published figures "
             "exist for these classes). ")
    blocks: list[Block] = [("h1", title), (
        "p", intro + "Figures are drawn from the files saved in each run folder, never by "
             "re-training or re-predicting.")]
    head, rows = headline_rows(runs)
    blocks += [("h2", "Headline metrics"), ("table", head, rows)]
    note = _boot_note(runs)
    if note:
        blocks.append(("p", note))
    for i, r in enumerate(runs):
        blocks += _run_blocks(r, _figures(r, fig_dir, f"run{i + 1}"))
        if map_name is not None:
            blocks += _mapped_blocks(r, map_name)
    html_path = md_path.with_suffix(".html")
    write_text(md_path, render_markdown(blocks, md_path.parent))
    write_text(html_path, render_html(blocks, title))
    return [md_path, html_path]
