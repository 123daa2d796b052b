"""Classify image files with any model :func:`hemacnn.inference.classifier.load_classifier` accepts.

The model's card (carried by the checkpoint, the ONNX file or the ensemble folder) selects the
same deterministic preprocessing as training (:func:`hemacnn.data.images.load_images`).

:func:`run_predict` classifies files, folders (recursively) and globs in batches
(:func:`classify_files`): one row per file with the class, the probability of every class, a
review flag and a status, so a file that cannot be classified is a row that says why, never a
silent gap. Every row also says how its probabilities were computed (precision, backend and
its version, device: :func:`hemacnn.inference.classifier.numerics`).
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.atomic import atomic_open, write_json
from hemacnn.data.colour import BatchColour, batch_colour
from hemacnn.data.images import FORMATS_BY_EXTENSION, load_images
from hemacnn.data.inputcheck import Concern, InputWarning, check_input
from hemacnn.data.parallel import progress_bar
from hemacnn.data.scan import IGNORED_NAMES
from hemacnn.errors import HemacnnError
from hemacnn.inference.classifier import Numerics, load_classifier, numerics
from hemacnn.inference.differential import (
    format_differential,
    from_predictions,
    run_confusion,
    write_differential,
)
from hemacnn.scoring.classmap import LeftOut, ResolvedMap, left_out_text, load_class_map, resolve

DEFAULT_REVIEW_BELOW = 0.7
"""A cell whose top probability is below this is flagged for a person's review (predict, serve)."""

__all__ = ["Prediction", "Status", "classify_files", "format_predictions", "run_predict"]


class Status(Enum):
    """What became of one file: classified, classified with a warning, or not classified."""

    OK = "ok"
    SUSPICIOUS = "suspicious"  # classified, but unlike the training cells (see the warnings)
    ERROR = "error"  # not classified; the detail says why


@dataclass(frozen=True)
class Prediction:
    """One file's result. ``probabilities`` maps every class code to its probability (class
    order) and is empty when the file could not be classified."""

    path: str
    status: Status
    detail: str = ""  # the error, or the warnings in words
    probabilities: dict[str, float] = field(default_factory=dict)
    name: str = ""
    unsure: bool = False  # the top probability is below the review threshold
    warnings: tuple[InputWarning, ...] = ()
    reason: str = ""  # ERROR: why, in a few words (the decoder's own, not parsed from detail)
    colour: tuple[float, ...] = ()  # mean RGB of the preprocessed pixels (before normalising)
    truth: str = ""  # with a class map: the file's class in the other dataset's terms
    correct: bool | None = None  # with a class map: None when its truth is left out
    computed: Numerics | None = None  # how the probabilities were computed

    @property
    def code(self) -> str:
        """The predicted class code ('' when not classified)."""
        return max(self.probabilities, key=self.probabilities.__getitem__, default="")

    @property
    def probability(self) -> float | None:
        """The predicted class's probability (None when not classified)."""
        return self.probabilities[self.code] if self.probabilities else None

    @property
    def review(self) -> bool:
        """Whether a person should look at this cell: the model is unsure, or the file has
        any warning (a confident call on a cell unlike the training ones is still doubtful)."""
        return self.status is not Status.ERROR and (self.unsure or bool(self.warnings))

    @property
    def status_text(self) -> str:
        """``ok``, ``suspicious: ...`` or ``error: ...``, as the files have always said it."""
        return self.status.value if self.status is Status.OK else (
            f"{self.status.value}: {self.detail}")

    def row(self, classes: Sequence[str], mapped: bool = False) -> dict[str, Any]:
        """The CSV/JSON row: path, class, name, probability, p_<CODE>..., review, status,
        warning (the concerns, comma-separated); with ``mapped`` also truth and correct; last
        precision, backend, backend_version and device (how the probabilities were computed)."""
        row: dict[str, Any] = {"path": self.path, "class": self.code, "name": self.name,
                               "probability": self.probability}
        row.update({f"p_{c}": self.probabilities.get(c) for c in classes})
        row.update({"review": self.review, "status": self.status_text,
                    "warning": ",".join(w.concern.value for w in self.warnings)})
        if mapped:
            row.update({"truth": self.truth, "correct": self.correct})
        row.update(self.computed.as_dict() if self.computed is not None
                   else dict.fromkeys(f.name for f in fields(Numerics)))
        return row


@dataclass(frozen=True)
class Inputs:
    """The files to classify, and the files of the folders and globs that are not images."""

    files: list[str]
    skipped: list[str]


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in FORMATS_BY_EXTENSION


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> Inputs:
    """Files, folders (recursively, sorted, hidden files skipped) and globs as one file list.

    Folders and globs give only image files, as the scan takes them (so notes, PDFs and this
    command's own CSV/JSON output are skipped and counted); a file named on its own is always
    tried. A path that matches nothing stays in the list, so it becomes a row saying so.
    """
    files: list[str] = []
    skipped: list[str] = []
    for item in map(str, inputs):
        if os.path.isdir(item):
            for dirpath, dirnames, names in os.walk(item):
                dirnames[:] = sorted(d for d in dirnames
                                     if not d.startswith(".") and d not in IGNORED_NAMES)
                for n in sorted(names):
                    if n.startswith(".") or n in IGNORED_NAMES:
                        continue
                    (files if _is_image_name(n) else skipped).append(os.path.join(dirpath, n))
        elif not os.path.exists(item) and glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                files.append(item)
                continue
            for m in matches:
                if os.path.isdir(m):
                    found = expand_inputs([m])
                    files += found.files
                    skipped += found.skipped
                else:
                    (files if _is_image_name(m) else skipped).append(m)
        else:
            files.append(item)
    return Inputs(files, skipped)


def _no_images_error(inputs: Sequence[str | os.PathLike], skipped: list[str]) -> HemacnnError:
    kinds = ", ".join(sorted(FORMATS_BY_EXTENSION))
    where = ", ".join(map(str, inputs[:3])) + (" …" if len(inputs) > 3 else "")
    if skipped:
        return HemacnnError(f"no image files in {where}: {len(skipped)} non-image files skipped "
                            f"(images end in {kinds}); give cell images")
    return HemacnnError(f"no image files in {where}; give image files ({kinds}) or folders "
                        "that hold them")


def classify_files(model: str | os.PathLike, files: Sequence[str | os.PathLike],
                   tta: bool = False, review_below: float = DEFAULT_REVIEW_BELOW,
                   batch_size: int = 64, precision: str = "fp32", progress: bool = False,
                   classifier: Any = None, adapt_bn: bool = False) -> list[Prediction]:
    """Classify ``files`` in batches: one :class:`Prediction` per file, in input order.

    ``unsure`` is set when the top probability is below ``review_below``; a classified file
    unlike the training cells (:func:`hemacnn.data.inputcheck.check_input`) is SUSPICIOUS.
    Either flags it for review (:attr:`Prediction.review`).
    ``adapt_bn``: re-estimate BatchNorm statistics on these files first (a first pass over them).
    """
    if not 0.0 <= review_below <= 1.0:
        raise HemacnnError(f"--review-below must lie in [0, 1] (got {review_below})")
    if batch_size < 1:
        raise HemacnnError(f"--batch-size must be at least 1 (got {batch_size})")
    clf = classifier or load_classifier(model, precision=precision, adapt_bn=adapt_bn)
    how = numerics(clf)
    classes = list(clf.card["classes"])
    names = dict(zip(classes, clf.card.get("class_names") or classes, strict=True))
    files = [str(f) for f in files]
    if adapt_bn:
        clf.adapt((load_images(files[s:s + batch_size], clf.card)[0]
                   for s in range(0, len(files), batch_size)), batch_size)
    preds: list[Prediction] = []
    with progress_bar("predict", len(files), enabled=progress and len(files) > 8) as advance:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            images, ok, errors = load_images(chunk, clf.card)
            probs = clf.probs(images, batch_size=batch_size, tta=tta)
            by_index = {i: (images[j], probs[j]) for j, i in enumerate(ok)}
            failed = {exc.path: exc for exc in errors}
            for i, path in enumerate(chunk):
                if i not in by_index:
                    exc = failed[path]
                    preds.append(Prediction(path, Status.ERROR, str(exc), reason=exc.reason,
                                            computed=how))
                    continue
                pixels, p = by_index[i]
                found = tuple(check_input(path, pixels, clf.card))
                per_class = {c: float(v) for c, v in zip(classes, p, strict=True)}
                code = classes[int(p.argmax())]
                preds.append(Prediction(
                    path, Status.SUSPICIOUS if found else Status.OK,
                    "; ".join(w.detail for w in found), per_class, names[code],
                    unsure=float(p.max()) < review_below, warnings=found,
                    colour=tuple(float(v) for v in pixels.reshape(-1, 3).mean(axis=0)),
                    computed=how))
            advance(len(chunk))
    return preds


def colour_check(preds: Sequence[Prediction], card: dict[str, Any]) -> BatchColour:
    """How far the classified files' mean colour lies from the training images'."""
    return batch_colour(np.array([p.colour for p in preds if p.colour]), card)


def with_colour_warning(preds: Sequence[Prediction], colour: BatchColour) -> list[Prediction]:
    """Every classified file gets a ``colour`` warning when the batch's colour is far."""
    if not colour.far:
        return list(preds)
    warning = InputWarning(Concern.COLOUR, f"the batch's mean colour lies {colour.distance:.1f} "
                           "spreads from the training images'")
    return [p if p.status is Status.ERROR else replace(
        p, status=Status.SUSPICIOUS, warnings=(*p.warnings, warning),
        detail="; ".join(w.detail for w in (*p.warnings, warning))) for p in preds]


def with_truth(preds: Sequence[Prediction], resolved: ResolvedMap
               ) -> tuple[list[Prediction], dict[str, int]]:
    """Each file's truth from its folder name (and file-name prefix) through the class map;
    the cells left out per truth."""
    out, left_out = [], Counter()
    for p in preds:
        truth, got = resolved.label(Path(p.path).parent.name, Path(p.path).name)
        if isinstance(got, LeftOut) or p.status is Status.ERROR:
            left_out[truth] += isinstance(got, LeftOut)
            out.append(replace(p, truth=truth))
        else:
            out.append(replace(p, truth=truth, correct=resolved.correct(got, p.code)))
    return out, {t: n for t, n in left_out.items() if n}


def mapped_line(preds: Sequence[Prediction], left_out: dict[str, int], name: str) -> str:
    """How many mapped cells the model called correctly, and what the map left out."""
    scored = [p.correct for p in preds if p.correct is not None]
    share = f" ({sum(scored) / len(scored):.1%})" if scored else ""
    line = f"class map {name}: {sum(scored)} of {len(scored)} mapped cells correct{share}"
    return line + (f"; left out: {left_out_text(left_out)}" if left_out else "")


def summary_line(preds: Sequence[Prediction], skipped: int = 0) -> str:
    """How many files were classified, flagged for review, doubtful, failed and skipped."""
    failed = sum(p.status is Status.ERROR for p in preds)
    doubtful = sum(p.status is Status.SUSPICIOUS for p in preds)
    review = sum(p.review for p in preds)
    line = (f"{len(preds) - failed} of {len(preds)} files classified, {failed} failed, "
            f"{review} flagged for review, {doubtful} with warnings")
    return line + (f", {skipped} non-image file{'s' * (skipped != 1)} skipped" if skipped else "")


OUT_SUFFIXES = (".csv", ".json")


def check_out(out: str | os.PathLike) -> Path:
    """``out`` when predict can write it: a .csv or .json file in a folder that exists."""
    out = Path(out)
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise HemacnnError(f"--out {out}: give a .csv or .json file name (the format follows "
                           "the extension)")
    parent = out.absolute().parent
    if not parent.is_dir():
        # Creating folders the user did not ask for (up to the filesystem root) hides typos.
        raise HemacnnError(f"--out {out}: folder {parent} does not exist; create it first or "
                           "choose another place")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HemacnnError(f"--out {out}: folder {parent} is not writable; choose another place")
    if out.is_dir():
        raise HemacnnError(f"--out {out} is a folder; give a .csv or .json file name")
    return out


def write_predictions(preds: Sequence[Prediction], classes: Sequence[str],
                      out: str | os.PathLike, mapped: bool = False) -> Path:
    """The rows as CSV (or JSON when ``out`` ends in .json), written atomically."""
    out = check_out(out)
    rows = [p.row(classes, mapped) for p in preds]
    if out.suffix.lower() == ".json":
        write_json(out, rows)
        return out
    columns = list(Prediction("", Status.OK).row(classes, mapped))
    with atomic_open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else f"{v:.6f}" if isinstance(v, float) else v)
                        for k, v in r.items()})
    return out


def format_predictions(preds: Sequence[Prediction]) -> str:
    """One line per file: class, probability, name and review flag, or the failure."""
    lines = []
    width = max((len(p.path) for p in preds), default=4)
    for p in preds:
        if p.status is Status.ERROR:
            lines.append(f"{p.path:<{width}}  ERROR  {p.detail}")
            continue
        flag = "  REVIEW" if p.review else ""
        lines.append(f"{p.path:<{width}}  {p.code:<4} {p.probability:.3f}  {p.name}{flag}")
        for w in p.warnings:
            lines.append(f"{'':<{width}}  WARNING  {w.concern.value}: {w.detail}")
    return "\n".join(lines)


def run_predict(model: str | os.PathLike, inputs: Sequence[str | os.PathLike],
                out: str | os.PathLike | None = None, as_json: bool = False, tta: bool = False,
                review_below: float = DEFAULT_REVIEW_BELOW, with_differential: bool = False,
                batch_size: int = 64, precision: str = "fp32", progress: bool = True,
                class_map: str | os.PathLike | None = None, adapt_bn: bool = False
                ) -> tuple[str, int]:
    """The ``predict`` command: classify, write ``out`` (+ differential); (text, n classified).

    The batch's mean colour is compared with the training images' (a ``colour`` warning on
    every row and a summary line when far); ``class_map`` (default: the card's) adds each
    file's truth, from its folder name, and whether the call is correct in the map's terms.
    """
    if out is not None:
        check_out(out)  # before the work, not after it
    found = expand_inputs(inputs)
    if not found.files:
        raise _no_images_error(inputs, found.skipped)
    clf = load_classifier(model, precision=precision, adapt_bn=adapt_bn)
    classes = list(clf.card["classes"])
    map_spec = class_map if class_map is not None else clf.card.get("class_map")
    resolved = (resolve(load_class_map(map_spec), classes, f"model {model}")
                if map_spec is not None else None)
    preds = classify_files(model, found.files, tta=tta, review_below=review_below,
                           batch_size=batch_size, progress=progress, classifier=clf,
                           adapt_bn=adapt_bn)
    colour = colour_check(preds, clf.card)
    preds = with_colour_warning(preds, colour)
    extra_lines = [colour.summary()] if colour.far else []
    if resolved is not None:
        preds, left_out = with_truth(preds, resolved)
        extra_lines.append(mapped_line(preds, left_out, resolved.cmap.name))
    if getattr(clf, "adapted", None) is not None:
        extra_lines.append(f"test-time adaptation: {clf.adapted.summary()}")
    how = numerics(clf)
    extra_lines.append(f"probabilities computed with {how}")
    mapped = resolved is not None
    # The differential's adjusted shares correct for the model's errors on its own test split.
    diff = (from_predictions(preds, classes, run_confusion(model, clf.card))
            if with_differential else None)
    if diff is not None:
        diff["inference"] = how.as_dict()
    written = []
    if out is not None:
        written.append(write_predictions(preds, classes, out, mapped))
        if diff is not None:
            written += write_differential(diff, out)
    if as_json:
        rows = [p.row(classes, mapped) for p in preds]
        text = json.dumps({"predictions": rows, "differential": diff} if diff else rows)
    else:
        parts = [format_predictions(preds) if out is None else ""]  # the file holds the rows
        if diff is not None:
            parts.append(format_differential(diff))
        parts += [f"wrote {p}" for p in written] + extra_lines
        parts += [summary_line(preds, len(found.skipped))]
        text = "\n".join(p for p in parts if p)
    return text, sum(p.status is not Status.ERROR for p in preds)
