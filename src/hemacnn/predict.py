"""Classify image files with any model :func:`hemacnn.loading.load_classifier` accepts.

The model's card (carried by the checkpoint, the ONNX file or the ensemble folder) selects the
same deterministic preprocessing as training (:func:`hemacnn.data.cache.preprocess_image`).

:func:`predict_files` classifies files, folders (recursively) and globs in batches: one row per
file with the class, the probability of every class, a review flag and a status, so a file that
cannot be classified is a row that says why, never a silent gap.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.errors import HemacnnError
from hemacnn.loading import load_classifier

__all__ = ["predict_files", "load_images", "format_predictions", "run_predict"]

DEFAULT_REVIEW_BELOW = 0.7
"""A cell whose top probability is below this is flagged for a person's review (predict, serve)."""


def load_images(paths: Sequence[str | os.PathLike], card: dict[str, Any]
                ) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Preprocess files as the card says: (images, indices that loaded, (path, error) pairs)."""
    from hemacnn.data.cache import preprocess_image

    size, method = int(card["input_size"]), card.get("resize_method", "nearest")
    arrays, ok, errors = [], [], []
    for i, p in enumerate(paths):
        try:
            if Path(p).is_dir():
                raise HemacnnError(f"{p} is a folder, not an image")
            arrays.append(preprocess_image(p, size, method))
            ok.append(i)
        except HemacnnError as exc:
            errors.append((str(p), str(exc)))
    images = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), dtype=np.uint8)
    return images, ok, errors


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Files, folders (recursively, sorted, hidden files skipped) and globs as one file list.

    A path that matches nothing stays in the list, so it becomes a row saying it is missing.
    """
    from hemacnn.data.scan import IGNORED_NAMES

    files: list[str] = []
    for item in map(str, inputs):
        if os.path.isdir(item):
            for dirpath, dirnames, names in os.walk(item):
                dirnames[:] = sorted(d for d in dirnames
                                     if not d.startswith(".") and d not in IGNORED_NAMES)
                files += [os.path.join(dirpath, n) for n in sorted(names)
                          if not n.startswith(".") and n not in IGNORED_NAMES]
        elif not os.path.exists(item) and glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            files += expand_inputs(matches) if matches else [item]
        else:
            files.append(item)
    return files


def _pixel_warning(path: str | os.PathLike) -> str | None:
    """The scan's verdict on a file's pixels: a damaged image still gets a (doubtful) label."""
    from hemacnn.data.scan import check_file

    path = Path(path)
    _, _, _, found = check_file(str(path.parent), path.name)
    details = [detail for status, detail in found if status == "suspicious"]
    return f"suspicious: {details[0]}" if details else None


def _row(path: str, classes: list[str], names: list[str], probs: np.ndarray | None,
         review_below: float, status: str) -> dict[str, Any]:
    row: dict[str, Any] = {"path": path, "class": "", "name": "", "probability": None}
    row.update({f"p_{c}": None for c in classes})
    if probs is not None:
        best = int(probs.argmax())
        row.update({"class": classes[best], "name": names[best],
                    "probability": float(probs[best])})
        row.update({f"p_{c}": float(v) for c, v in zip(classes, probs, strict=True)})
    row["review"] = probs is not None and float(probs.max()) < review_below
    row["status"] = status
    return row


def predict_files(model: str | os.PathLike, inputs: Sequence[str | os.PathLike],
                  tta: bool = False, review_below: float = 0.0, batch_size: int = 64,
                  precision: str = "auto", progress: bool = False,
                  classifier: Any = None) -> list[dict[str, Any]]:
    """Classify files, folders and globs in batches: one row per file, in input order.

    Each row: path, class, name, probability, ``p_<CODE>`` per class, review (top probability
    below ``review_below``) and status (``ok``, ``suspicious: ...`` when classified with
    doubtful pixels, or ``error: ...`` when the file could not be classified).
    """
    from hemacnn.data.parallel import progress_bar

    if not 0.0 <= review_below <= 1.0:
        raise HemacnnError(f"--review-below must lie in [0, 1] (got {review_below})")
    if batch_size < 1:
        raise HemacnnError(f"--batch-size must be at least 1 (got {batch_size})")
    clf = classifier or load_classifier(model, precision=precision)
    classes = list(clf.card["classes"])
    names = list(clf.card.get("class_names") or classes)
    files = expand_inputs(inputs)
    rows: list[dict[str, Any]] = []
    with progress_bar("predict", len(files), enabled=progress and len(files) > 8) as advance:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            images, ok, errors = load_images(chunk, clf.card)
            probs = clf.probs(images, batch_size=batch_size, tta=tta)
            by_index = dict(zip(ok, probs, strict=True))
            bad = dict(errors)
            for i, path in enumerate(chunk):
                if i in by_index:
                    status = _pixel_warning(path) or "ok"
                    rows.append(_row(path, classes, names, by_index[i], review_below, status))
                else:
                    rows.append(_row(path, classes, names, None, review_below,
                                     f"error: {bad[path]}"))
            advance(len(chunk))
    return rows


def summary_line(rows: list[dict[str, Any]]) -> str:
    """How many files were classified, flagged for review, doubtful and failed."""
    failed = sum(r["status"].startswith("error") for r in rows)
    doubtful = sum(r["status"].startswith("suspicious") for r in rows)
    review = sum(bool(r["review"]) for r in rows)
    return (f"{len(rows) - failed} of {len(rows)} files classified, {failed} failed, "
            f"{review} flagged for review, {doubtful} with suspicious pixels")


def write_predictions(rows: list[dict[str, Any]], out: str | os.PathLike) -> Path:
    """Rows as CSV (or JSON when ``out`` ends in .json), written atomically."""
    import csv

    from hemacnn.atomic import atomic_open, check_creatable, write_json

    out = Path(out)
    check_creatable(out.parent)
    if out.suffix.lower() == ".json":
        write_json(out, rows)
        return out
    columns = list(rows[0]) if rows else ["path", "class", "probability", "review", "status"]
    with atomic_open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else f"{v:.6f}" if isinstance(v, float) else v)
                        for k, v in r.items()})
    return out


def format_predictions(rows: list[dict[str, Any]]) -> str:
    """One line per file: class, probability, name and review flag, or the failure."""
    lines = []
    width = max((len(r["path"]) for r in rows), default=4)
    for r in rows:
        if r["status"].startswith("error"):
            lines.append(f"{r['path']:<{width}}  ERROR  {r['status'][len('error: '):]}")
            continue
        flag = "  REVIEW" if r["review"] else ""
        lines.append(f"{r['path']:<{width}}  {r['class']:<4} {r['probability']:.3f}  "
                     f"{r['name']}{flag}")
        if r["status"] != "ok":
            lines.append(f"{'':<{width}}  WARNING  {r['status']}")
    return "\n".join(lines)



def run_predict(model: str | os.PathLike, inputs: Sequence[str | os.PathLike],
                out: str | os.PathLike | None = None, as_json: bool = False, tta: bool = False,
                review_below: float = 0.0, with_differential: bool = False,
                batch_size: int = 64, precision: str = "auto", progress: bool = True
                ) -> tuple[str, int]:
    """The ``predict`` command: classify, write ``out`` (+ differential); (text, n classified)."""
    from hemacnn.differential import format_differential, from_predictions, write_differential

    if out is not None:
        from hemacnn.atomic import check_creatable

        check_creatable(Path(out).parent)  # before the work, not after it
    clf = load_classifier(model, precision=precision)
    rows = predict_files(model, inputs, tta=tta, review_below=review_below,
                         batch_size=batch_size, progress=progress, classifier=clf)
    diff = from_predictions(rows, clf.card["classes"]) if with_differential else None
    written = []
    if out is not None:
        written.append(write_predictions(rows, out))
        if diff is not None:
            written += write_differential(diff, out)
    if as_json:
        text = json.dumps({"predictions": rows, "differential": diff} if diff else rows)
    else:
        parts = [format_predictions(rows) if out is None else ""]  # the file holds the rows
        if diff is not None:
            parts.append(format_differential(diff))
        parts += [f"wrote {p}" for p in written] + [summary_line(rows)]
        text = "\n".join(p for p in parts if p)
    return text, sum(1 for r in rows if r["class"])
