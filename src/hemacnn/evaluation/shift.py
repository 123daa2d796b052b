"""Words for a shift to another laboratory's cells: colour distance, adaptation, what to try.

An evaluation of another dataset prints a table; this module adds what a user acts on. How far
the images' mean colour lies from the training images' (the batch colour check that ``predict``
runs, :func:`hemacnn.data.colour.batch_colour`), what test-time BatchNorm adaptation changed
(macro-F1 before and after, the largest change in a class probability) and, when the shift is
large, a hint to try ``--adapt-bn``. Adaptation takes every image given, labelled or not
(:func:`every_image`): a user without labels has only those.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.data.colour import BatchColour, batch_colour, sample_index
from hemacnn.data.scan import load_or_scan

ADAPT_IMAGES = 6400
"""At most this many images (evenly spaced over every image given) are loaded for test-time
adaptation: the 100 batches of 64 that :func:`hemacnn.models.batchnorm.adapt_batchnorm` reads."""

F1_DROP_HINT = 0.15
"""A macro-F1 this far below the in-domain one (over the same classes) counts as a large shift."""


def every_image(data: Path) -> list[Path]:
    """Every usable image of ``data`` whatever its folder or label (a CSV: every listed file),
    evenly sampled to :data:`ADAPT_IMAGES`."""
    if data.is_file():
        with open(data, newline="", encoding="utf-8") as fh:
            rows = [r.get("path") or "" for r in csv.DictReader(fh)]
        paths = [p if p.is_absolute() else data.parent / p for p in (Path(r) for r in rows if r)]
        files = [p for p in paths if p.is_file()]
    else:
        files = [data / e.path for e in load_or_scan(data, progress=False) if e.usable]
    return [files[i] for i in sample_index(len(files), ADAPT_IMAGES)] if files else []


def colour_record(images: np.ndarray, card: dict[str, Any]) -> dict[str, Any]:
    """The images' colour distance from the training images' (the JSON's ``colour``)."""
    means = np.asarray(images, dtype=np.float64).reshape(len(images), -1, 3).mean(axis=1)
    c = batch_colour(means, card)
    return {"distance": c.distance, "mean": c.mean, "far": c.far}


def adaptation_record(summary: str, images: int, scored: int, before: dict[str, Any],
                      after: dict[str, Any], probs_before: np.ndarray,
                      probs_after: np.ndarray) -> dict[str, Any]:
    """The JSON's ``adaptation``: what it read and what it changed, in probability units."""
    change = float(np.abs(np.asarray(probs_after) - np.asarray(probs_before)).max())
    return {"summary": summary, "images": images, "scored": scored,
            "macro_f1_before": before["macro_f1"], "macro_f1_after": after["macro_f1"],
            "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
            "max_probability_change": change}


def _drop(result: dict[str, Any]) -> float | None:
    """In-domain macro-F1 minus this dataset's, over the map's classes (None: unknown)."""
    inside = ((result.get("class_map") or {}).get("in_domain") or {}).get("mapped") or {}
    own = inside.get("macro_f1")
    return None if own is None else own - result["macro_f1"]


def format_shift(result: dict[str, Any]) -> list[str]:
    """Colour distance, adaptation before/after, and the ``--adapt-bn`` hint."""
    lines = []
    colour = result.get("colour")
    if colour:
        lines.append(BatchColour(colour["distance"], colour["mean"], colour["far"]).summary()
                     .replace("this batch's", "these images'").replace("batch mean", "mean")
                     .replace(" or --adapt-bn" if result.get("adaptation") else "\0", ""))
    adapted = result.get("adaptation")
    if adapted:
        pool = (f"all {adapted['images']} images given, labelled or not (not only the "
                f"{adapted['scored']} scored)" if adapted["images"] != adapted["scored"]
                else f"the {adapted['images']} images evaluated")
        lines += [f"test-time adaptation (--adapt-bn) on {pool}: {adapted['summary']}",
                  f"  macro F1 before adaptation {adapted['macro_f1_before']:.3f}, after "
                  f"{adapted['macro_f1_after']:.3f} (accuracy {adapted['accuracy_before']:.3f}"
                  f" -> {adapted['accuracy_after']:.3f}); largest change in a class "
                  f"probability: {adapted['max_probability_change']:.2f}"]
    elif result.get("class_map"):
        drop = _drop(result)
        far = bool(colour and colour["far"])
        if far or (drop is not None and drop > F1_DROP_HINT):
            why = (["the colour lies far from the training images'"] if far else []) + (
                [f"macro F1 is {drop:.2f} below in-domain (over {F1_DROP_HINT:g})"]
                if drop is not None and drop > F1_DROP_HINT else [])
            lines.append(f"large shift ({'; '.join(why)}): try --adapt-bn (re-estimates "
                         "BatchNorm statistics on these images, no labels needed)")
    return lines
