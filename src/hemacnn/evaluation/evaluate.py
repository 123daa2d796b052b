"""Evaluate a trained run: predict a split or a labelled folder, compute metrics, save results.

Metric maths lives in :mod:`hemacnn.scoring.metrics` (arrays in, dict out). This module handles run
folders and files: it writes ``evaluation_<name>.json``, ``predictions_<name>.npz`` (so the
metrics can be recomputed later without the model) and the confusion-matrix and reliability
figures under ``plots/``. The JSON's ``inference`` says how the probabilities were computed
(:func:`hemacnn.inference.classifier.numerics`); a bf16 evaluation is written under its own name
(``evaluation_test_bf16.json``) so that it never replaces the fp32 figures of record.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.atomic import atomic_open, ensure_writable_dir, write_json
from hemacnn.card import read_card
from hemacnn.data.cache import ImageCache
from hemacnn.data.images import DRAFT_BY_DEFAULT, load_images
from hemacnn.data.manifest import manifest_hash
from hemacnn.data.paths import dataset_cache_dir
from hemacnn.data.scan import check_file, load_or_scan
from hemacnn.data.splits import load_splits
from hemacnn.errors import HemacnnError
from hemacnn.evaluation.plots import plot_confusion, plot_reliability, run_figures_wanted
from hemacnn.evaluation.shift import adaptation_record, colour_record, every_image, format_shift
from hemacnn.inference.classifier import Numerics, load_classifier, numerics
from hemacnn.rundir import RunDir, find_checkpoint
from hemacnn.scoring.classmap import LeftOut, ResolvedMap, load_class_map, resolve
from hemacnn.scoring.mapped import class_map_record, format_mapped, score_mapped, target_scores
from hemacnn.scoring.metrics import compute_metrics

SPLITS = ("train", "val", "test")


def _write_outputs(result: dict[str, Any], y_true: np.ndarray, probs: np.ndarray,
                   classes: Sequence[str], out_dir: Path, name: str,
                   paths: Sequence[str] | None,
                   extra: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    out_dir = ensure_writable_dir(Path(out_dir))
    run = RunDir(out_dir)
    plots = run.plots
    cm = result["confusion_matrix"]["counts"]
    outputs = {"evaluation": run.evaluation(name), "predictions": run.predictions(name)}
    if run_figures_wanted():
        outputs.update(
            confusion=plot_confusion(cm, classes, plots / f"confusion_{name}.png", split=name),
            confusion_normalised=plot_confusion(cm, classes,
                                                plots / f"confusion_{name}_normalised.png",
                                                normalise=True, split=name),
            reliability=plot_reliability(result["calibration"]["bins"],
                                         plots / f"reliability_{name}.png",
                                         ece=result["calibration"]["ece"], split=name),
        )
    with atomic_open(outputs["predictions"], "wb") as fh:
        np.savez_compressed(fh, y_true=np.asarray(y_true, dtype=np.int64),
                            probs=np.asarray(probs, dtype=np.float32),
                            paths=np.asarray(list(paths) if paths is not None else [], dtype=str),
                            classes=np.asarray(list(classes), dtype=str), **(extra or {}))
    result["outputs"] = {k: str(v) for k, v in outputs.items()}
    write_json(outputs["evaluation"], result)
    return result


def evaluate_predictions(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                         out_dir: str | os.PathLike, name: str = "test",
                         paths: Sequence[str] | None = None,
                         computed: Numerics | None = None) -> dict[str, Any]:
    """Compute metrics and write evaluation JSON, predictions NPZ and figures into ``out_dir``;
    ``computed``: how ``probs`` were computed (recorded as ``inference``)."""
    result = {"name": name, **compute_metrics(y_true, probs, list(classes))}
    if computed is not None:
        result["inference"] = computed.as_dict()
    return _write_outputs(result, y_true, probs, classes, Path(out_dir), name, paths)


def read_split(run_dir: Path, split: str) -> list[tuple[str, str]]:
    """(path, class) rows of the run's saved ``split``, paths relative to the card's data_root."""
    if split not in SPLITS:
        raise HemacnnError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return load_splits(RunDir(run_dir).splits).split(split)


def _split_items(run_dir: Path, card: dict, split: str
                 ) -> tuple[list[Path], list[str], list[dict], dict[str, int]]:
    root = Path(card.get("data_root") or "")
    if not root.is_dir():
        raise HemacnnError(f"data folder {root} of this run (model_card.json data_root) not "
                           "found; evaluate with --data DIR instead")
    files, labels, skipped = [], [], []
    unknown: Counter[str] = Counter()
    for rel, label in read_split(run_dir, split):
        if label not in card["classes"]:
            unknown[label] += 1
        elif not (root / rel).is_file():
            skipped.append({"path": rel, "status": "missing", "detail": "file not found"})
        else:
            files.append(root / rel)
            labels.append(label)
    return files, labels, skipped, dict(unknown)


def _cached_images(root: Path, card: dict, files: list[Path]
                   ) -> tuple[np.ndarray, list[int], list] | None:
    """``files`` from an image cache that training built, when one holds them all, unchanged.

    Decoding and resizing the JPEGs again cost ~7% of `evaluate` on the sample at 128 px. A
    cache is used only when its size, resize method and draft setting are the card's and the
    content hashes of its files under the current scan of ``root`` are the ones it was built
    from (its ``manifest_hash``); otherwise the files are decoded as usual (None here).
    """
    size, method = int(card["input_size"]), card["resize_method"]
    rel = [Path(os.path.relpath(f, root)).as_posix() for f in files]
    indexes = sorted(dataset_cache_dir(root).glob("cache-*/index.json"))
    if not indexes:
        return None
    entries = {e.path: e for e in load_or_scan(root, progress=False)}
    for index in indexes:
        try:
            meta = json.loads(index.read_text(encoding="utf-8"))
            fits = (int(meta["size"]) == size and meta["method"] == method
                    and meta.get("draft") == DRAFT_BY_DEFAULT.get(method)
                    and set(rel) <= set(meta["paths"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not fits or any(p not in entries for p in meta["paths"]):
            continue
        if manifest_hash(entries[p] for p in meta["paths"]) != meta.get("manifest_hash"):
            continue  # a file changed since the cache was built
        cache = ImageCache(index.parent)
        return np.asarray(cache.array[cache.rows(rel)]), list(range(len(files))), []
    return None


@dataclass
class LabelledList:
    """The rows of a labelled-list CSV that carry a label, and how many carried none."""

    rows: list[tuple[str, str]]
    unreviewed: int = 0
    """Rows of a reviewed-labels CSV whose ``reviewed_class`` is empty: nobody reviewed them."""


def read_labelled_csv(path: Path) -> LabelledList:
    """(path, class) rows of a labelled-list CSV: a ``path`` column and a ``class`` column.

    A ``reviewed_class`` column (the CSV that ``hemacnn serve`` downloads) wins over ``class``,
    and only its non-empty rows count: an empty one is a cell no person confirmed or
    re-assigned, whose ``class`` is the model's own call and so no ground truth.
    """
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            label = next((c for c in ("reviewed_class", "class") if c in fields), None)
            if "path" not in fields or label is None:
                raise HemacnnError(f"{path} needs a header with a 'path' column and a 'class' "
                                   f"(or 'reviewed_class') column; found: {', '.join(fields)}")
            rows = [(row["path"], (row[label] or "").strip()) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise HemacnnError(f"cannot read labelled list {path}: {exc}") from None
    if label != "reviewed_class":
        return LabelledList(rows)
    reviewed = [(p, c) for p, c in rows if c]
    if rows and not reviewed:
        raise HemacnnError(f"{path} has no reviewed rows: reviewed_class is empty on all "
                           f"{len(rows)} (confirm or re-assign cells on the review page before "
                           "downloading)")
    return LabelledList(reviewed, unreviewed=len(rows) - len(reviewed))


Targets = tuple[str, ...]
"""The model classes a cell may be called and still count as correct (one, without a map)."""


def _targets(label: str, filename: str, card: dict, resolved: ResolvedMap | None
             ) -> tuple[str, Targets | None]:
    """(the key to count a left-out cell under, its targets or None when it is left out)."""
    if resolved is None:
        return label, ((label,) if label in card["classes"] else None)
    truth, got = resolved.label(label, filename)
    return truth, (None if isinstance(got, LeftOut) else got)


def _csv_items(data: Path, card: dict, resolved: ResolvedMap | None = None
               ) -> tuple[list[Path], list[Targets], list[dict], dict[str, int], int]:
    files, labels, skipped = [], [], []
    unknown: Counter[str] = Counter()
    listed = read_labelled_csv(data)
    for rel, label in listed.rows:
        path = Path(rel) if Path(rel).is_absolute() else data.parent / rel  # beside the CSV
        key, targets = _targets(label, path.name, card, resolved)
        if targets is None:
            unknown[key or "(empty)"] += 1
            continue
        found = (check_file(str(path.parent), path.name)[3] if path.is_file()
                 else [("missing", "file not found")])
        bad = [(st, d) for st, d in found if st in ("missing", "unreadable", "suspicious")]
        if bad:
            skipped.append({"path": rel, "status": bad[0][0], "detail": bad[0][1]})
        else:
            files.append(path)
            labels.append(targets)
    if not files:
        raise HemacnnError(f"no usable images of the model's classes "
                           f"({', '.join(card['classes'])}) listed in {data}")
    return files, labels, skipped, dict(unknown), listed.unreviewed


def labelled_items(data: str | os.PathLike, card: dict, resolved: ResolvedMap | None = None
                   ) -> tuple[list[Path], list[Targets], list[dict], dict[str, int], int]:
    """Files, labels, skipped files, skipped classes and unreviewed CSV rows of ``data``."""
    root = Path(data)
    if root.is_file() and root.suffix.lower() == ".csv":
        return _csv_items(root, card, resolved)
    if not root.is_dir():
        raise HemacnnError(f"data folder {root} not found; give a folder of class folders "
                           "(CLASS/.../image.jpg) or a CSV with path and class columns")
    # The saved scan of this folder while its listing is unchanged (a second evaluate of the
    # same folder then skips decoding every file to check it).
    entries = load_or_scan(root, progress=False)
    files, labels, skipped = [], [], []
    unknown: Counter[str] = Counter()
    for e in entries:
        key, targets = _targets(e.label, Path(e.path).name, card, resolved)
        if targets is None:
            unknown[key] += 1
        elif not e.usable:
            skipped.append({"path": e.path, "status": e.status, "detail": e.detail})
        else:
            files.append(root / e.path)
            labels.append(targets)
    if not files:
        raise HemacnnError(
            f"no usable images of the model's classes ({', '.join(card['classes'])}) in "
            f"{root}; found classes: {', '.join(sorted(unknown)) or 'none'}")
    return files, labels, skipped, dict(unknown), 0


def evaluate_run(run_dir: str | os.PathLike, data: str | os.PathLike | None = None,
                 split: str = "test", tta: bool = False,
                 out: str | os.PathLike | None = None,
                 class_map: str | os.PathLike | None = None,
                 adapt_bn: bool = False, precision: str = "fp32") -> dict[str, Any]:
    """Evaluate a run's best checkpoint on its split (or on folder ``data``); save and return.

    ``class_map`` (a map file or a shipped map's name; default: the card's ``class_map``)
    scores ``data`` of another dataset in that dataset's own classes
    (:mod:`hemacnn.scoring.mapped`).
    ``adapt_bn`` re-estimates BatchNorm statistics on the evaluated images first (their labels
    unused): test-time adaptation to another stain or scanner. ``precision``: fp32 (the
    figures of record), bf16 or auto (bf16 where native); the result's ``inference`` records
    what ran, and a bf16 result's name ends in ``_bf16``.
    """
    run_dir = Path(run_dir)
    card = read_card(run_dir)
    ckpt = find_checkpoint(run_dir)
    unreviewed = 0
    resolved = None
    if data is None:
        if class_map is not None:
            raise HemacnnError("--class-map scores another dataset: give it with --data DIR")
        files, split_labels, skipped, unknown = _split_items(run_dir, card, split)
        labels = [(label,) for label in split_labels]
        name, root = split, Path(card["data_root"])
    else:
        map_spec = class_map if class_map is not None else card.get("class_map")
        if map_spec is not None:
            resolved = resolve(load_class_map(map_spec), card["classes"],
                               f"model {run_dir}")
        files, labels, skipped, unknown, unreviewed = labelled_items(data, card, resolved)
        name, root = f"data-{Path(data).resolve().name}", Path(data)
        if root.is_file():  # a labelled-list CSV: its paths are relative to its folder
            name, root = f"data-{root.resolve().stem}", root.parent
    if tta:
        name += "_tta"
    if adapt_bn:
        name += "_adaptbn"
    cached = _cached_images(root, card, files) if files else None
    images, ok, errors = cached if cached is not None else load_images(files, card)
    # The checkpoint, or its fresh ONNX export (hemacnn.inference.onnxmodel, ~2x on a CPU); with
    # adapt_bn the checkpoint, its BatchNorm statistics re-estimated on these images first.
    clf = load_classifier(run_dir, precision=precision, adapt_bn=adapt_bn)
    card, how = clf.card, numerics(clf)
    if how.precision == "bf16":
        name += "_bf16"
    for exc in errors:
        skipped.append({"path": os.path.relpath(exc.path, root), "status": "unreadable",
                        "detail": str(exc)})
    if not ok:
        raise HemacnnError(f"no readable images to evaluate in {root}")
    classes = card["classes"]
    truths = [labels[i] for i in ok]

    def score(probs: np.ndarray) -> tuple:
        if resolved is None:
            y_true = np.array([classes.index(t[0]) for t in truths], dtype=np.int64)
            return (y_true, probs, classes, None, None,
                    compute_metrics(y_true, probs, classes, names=card.get("class_names")))
        mapped = target_scores(resolved, truths, probs)  # (hemacnn.scoring.mapped)
        # the model's own probabilities and calls too: the figures can be recomputed, and the
        # folders' sums checked
        extra = {"y_pred": mapped.y_pred, "model_probs": probs.astype(np.float32),
                 "model_classes": np.asarray(classes, dtype=str)}
        return mapped.y_true, mapped.probs, mapped.classes, extra, mapped, score_mapped(mapped)

    adaptation = None
    if adapt_bn:  # on every image given, labelled or not: the unlabelled user's case
        every = every_image(Path(data)) if data is not None else []
        pool = load_images(every, card)[0] if every else images
        before = load_classifier(run_dir, precision=precision).probs(images, tta=tta)
        clf.adapt([pool])
    start = time.perf_counter()
    probs = clf.probs(images, tta=tta)  # (stain-normalised inside)
    seconds = time.perf_counter() - start
    views = len(ok) * (8 if tta else 1)
    y_true, scored, scored_classes, extra, mapped, metrics = score(probs)
    if adapt_bn:
        adaptation = adaptation_record(clf.adapted.summary(), len(pool), len(ok),
                                       score(before)[-1], metrics, before, probs)
    rel_paths = [os.path.relpath(files[i], root) for i in ok]
    result = {
        "name": name,
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt),
        "split": split if data is None else None,
        "data": str(Path(data).resolve()) if data is not None else str(root),
        "tta": bool(tta),
        "inference": how.as_dict(),
        # the network's speed here (decoded images in, probabilities out; each TTA view counts)
        "throughput": {"images": views, "seconds": round(seconds, 3),
                       "images_per_s": round(views / seconds, 2)},
        **metrics,
        "skipped_classes": unknown if resolved is None else {},
        "skipped_files": skipped,
        "skipped_unreviewed": unreviewed,
        "adapt_bn": clf.adapted.summary() if adapt_bn else None,
        "adaptation": adaptation,
        "colour": colour_record(images, card) if data is not None else None,
    }
    if resolved is not None:
        result["class_map"] = class_map_record(resolved, mapped, unknown,
                                               in_domain_summary(run_dir))
    return _write_outputs(result, y_true, scored, scored_classes,
                          Path(out) if out else run_dir, name, rel_paths, extra)


def in_domain_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's own test figures (its saved evaluation, else the end-of-training test) for the
    side-by-side table of a mapped evaluation; None when the run has neither."""
    run = RunDir(run_dir)
    for path in (run.evaluation("test"), run.test_metrics):
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            per = {c: {k: v.get(k) for k in ("precision", "recall", "recall_ci", "f1",
                                             "support")}
                   for c, v in saved["per_class"].items()}
            return {"source": str(path), "per_class": per, "macro_f1": saved.get("macro_f1"),
                    "accuracy": saved.get("accuracy"),
                    "headline_ci": saved.get("headline_ci"),
                    "confusion_matrix": saved.get("confusion_matrix")}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return None


def _fmt(v: float | None, digits: int = 4) -> str:
    return "  n/a " if v is None else f"{v:.{digits}f}"


def _ci(ci: list[float] | None) -> str:
    return "" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def class_table(per_class: dict[str, dict], with_ci: bool = True) -> list[str]:
    """Rows in the paper's Table 6 layout: class, precision, recall, F1, support (+ CIs).

    Codes of any length fit (other datasets name classes ``neutrophil``...); the name column
    is left out when every name is just the code.
    """
    cw = max(6, max((len(c) for c in per_class), default=0) + 2)
    nw = 22 if any(v["name"] != c for c, v in per_class.items()) else 0
    ci_head = f"{'95% CI':>17}" if with_ci else ""
    head = (f"{'class':<{cw}}{'name' if nw else '':<{nw}}{'precision':>10}{ci_head}"
            f"{'recall':>9}{ci_head}{'F1':>8}{'support':>9}")
    lines = [head, "-" * len(head)]
    for code, v in per_class.items():
        name = v["name"][:nw - 1] if nw else ""
        pci = f"{_ci(v['precision_ci']):>17}" if with_ci else ""
        rci = f"{_ci(v['recall_ci']):>17}" if with_ci else ""
        lines.append(f"{code:<{cw}}{name:<{nw}}{_fmt(v['precision']):>10}{pci}"
                     f"{_fmt(v['recall']):>9}{rci}{_fmt(v['f1']):>8}{v['support']:>9}")
    return lines


def headline_line(m: dict[str, Any]) -> str:
    """accuracy, balanced accuracy, macro and weighted F1 on one line."""
    return (f"accuracy {m['accuracy']:.4f}  balanced accuracy {m['balanced_accuracy']:.4f}  "
            f"macro F1 {m['macro_f1']:.4f}  weighted F1 {m['weighted_f1']:.4f}")


def format_evaluation(result: dict[str, Any]) -> str:
    """Human-readable evaluation: per-class table (Table 6 layout), headline, tolerant, notes."""
    where = (f"split '{result['split']}'" if result.get("split")
             else f"data {result.get('data')}")
    how = f", {Numerics(**result['inference'])}" if result.get("inference") else ""
    lines = [f"Evaluation {result.get('name', '')}: {where}, {result['n']} images"
             + (", TTA over 8 dihedral transforms" if result.get("tta") else "") + how, ""]
    lines += class_table(result["per_class"])
    lines += ["", "strict:   " + headline_line(result)]
    hci = result.get("headline_ci")
    if hci:
        lines.append(f"          95% intervals ({hci['method']}, {hci['resamples']} resamples): "
                     f"accuracy {_ci(hci['accuracy'])}  macro F1 {_ci(hci['macro_f1'])}")
    tol = result["tolerant"]
    if tol["groups"]:
        groups = "; ".join(f"{c}~{'/'.join(g)}" for c, g in tol["groups"].items())
        lines += ["tolerant: " + headline_line(tol) + f"   (groups: {groups})", ""]
        lines += ["Tolerant per class:"] + class_table(tol["per_class"], with_ci=False)
    else:
        lines.append("tolerant: same as strict (no tolerance group joins two of these classes)")
    lines += ["", f"expected calibration error {result['calibration']['ece']:.4f} "
              f"({result['calibration']['n_bins']} bins); CIs: 95% "
              f"{result['ci_method'].capitalize()} score intervals"]
    aucs = ", ".join(f"{c} {_fmt(v['roc_auc'], 3)}" for c, v in result["per_class"].items())
    lines.append(f"one-vs-rest ROC-AUC: {aucs}")
    speed = result.get("throughput")
    if speed:
        lines.append(f"network: {speed['images_per_s']:.1f} img/s ({speed['images']} images in "
                     f"{speed['seconds']:.1f} s)")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    if result.get("class_map"):
        lines += format_mapped(result)
    if result.get("colour") or result.get("adaptation"):
        lines += format_shift(result)
    elif result.get("adapt_bn"):
        lines.append(f"test-time adaptation: {result['adapt_bn']}")
    if result.get("skipped_classes"):
        sk = ", ".join(f"{c} ({n})" for c, n in sorted(result["skipped_classes"].items()))
        lines.append(f"skipped classes the model does not know: {sk}")
    if result.get("skipped_unreviewed"):
        lines.append(f"skipped {result['skipped_unreviewed']} rows nobody reviewed (empty "
                     "reviewed_class): only reviewed cells are scored")
    skipped = result.get("skipped_files") or []
    if skipped:
        lines.append(f"skipped {len(skipped)} files that failed validation:")
        lines += [f"  {s['path']}: {s['status']} {s['detail']}".rstrip() for s in skipped[:20]]
        if len(skipped) > 20:
            lines.append(f"  ... and {len(skipped) - 20} more (see the evaluation JSON)")
    if result.get("outputs"):
        lines.append(f"wrote {result['outputs']['evaluation']}")
    return "\n".join(lines)
