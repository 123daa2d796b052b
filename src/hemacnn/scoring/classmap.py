"""Another dataset's classes in a model's terms: a class map, resolved against one model.

A map file (YAML, ``format: hemacnn-classmap/1``) says which model classes each folder of the
other dataset may be called: ``classes`` (folder -> any of these; an empty list: no counterpart),
``prefixes`` (inside a folder, a file-name prefix overrides the folder's entry, as PBC's
``BNE_``/``SNE_`` neutrophils need) and ``optional`` (model classes a model may lack, with the
class to score instead or null). Any other class named in the map that the model lacks is an
error: a typo would otherwise quietly leave a whole class out.

Scoring: a cell whose truth maps to model classes T is correct when the prediction is in T. To
reuse every metric of :mod:`hemacnn.scoring.metrics` (intervals, confusion matrix, calibration),
each cell
gets one label in the model's classes: the prediction when it is in T, else T's first class
(:func:`mapped_labels`). Accuracy and calibration are then exactly the any-of scores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hemacnn.errors import HemacnnError

MAP_FORMAT = "hemacnn-classmap/1"
SHIPPED = ("matek-pbc",)
"""Maps shipped in the package (``scoring/classmaps/<name>.yaml``); give the name or a file."""


class LeftOut(Enum):
    """Why a truth class is not scored."""

    NO_COUNTERPART = "no counterpart"  # the map lists it with no model class
    NOT_IN_MAP = "not in the map"
    MODEL_LACKS = "the model has none of its classes"


@dataclass(frozen=True)
class ClassMap:
    """A parsed map file (not yet checked against a model)."""

    name: str
    source: str
    classes: dict[str, tuple[str, ...]]
    prefixes: dict[str, dict[str, tuple[str, ...]]]
    optional: dict[str, str | None]

    def truth(self, folder: str, filename: str) -> str:
        """The truth key of a file: its folder, or ``folder/PREFIX`` when a prefix rule hits."""
        for prefix in self.prefixes.get(folder, {}):
            if filename.startswith(prefix):
                return f"{folder}/{prefix}"
        return folder

    def targets(self, truth: str) -> tuple[str, ...] | None:
        """The model classes named for a truth key (None: the map does not mention it)."""
        folder, _, prefix = truth.partition("/")
        if prefix:
            return self.prefixes[folder][prefix]
        return self.classes.get(folder)


@dataclass(frozen=True)
class ResolvedMap:
    """A map checked against a model's classes: truth key -> model classes it scores as."""

    cmap: ClassMap
    model_classes: tuple[str, ...]
    scored: dict[str, tuple[str, ...]]
    left_out: dict[str, LeftOut]

    def label(self, folder: str, filename: str) -> tuple[str, tuple[str, ...] | LeftOut]:
        """(truth key, the model classes that count as correct, or why it is left out)."""
        truth = self.cmap.truth(folder, filename)
        if truth in self.scored:
            return truth, self.scored[truth]
        return truth, self.left_out.get(truth, LeftOut.NOT_IN_MAP)

    def describe(self) -> dict[str, Any]:
        """The resolved map for the evaluation JSON."""
        return {"name": self.cmap.name, "source": self.cmap.source,
                "scored": {t: list(c) for t, c in self.scored.items()},
                "left_out": {t: why.value for t, why in self.left_out.items()}}


def _class_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise HemacnnError(f"{where}: give a class code or a list of them (got {value!r})")


def _map_path(spec: str | os.PathLike) -> Path | None:
    if str(spec) in SHIPPED:
        return None
    path = Path(spec)
    if not path.is_file():
        raise HemacnnError(f"class map {spec} not found; give a YAML file or a shipped map "
                           f"({', '.join(SHIPPED)})")
    return path


def load_class_map(spec: str | os.PathLike) -> ClassMap:
    """A map file, or a shipped map by name; a malformed one is a one-line error naming it."""
    path = _map_path(spec)
    if path is None:
        shipped = resources.files("hemacnn.scoring").joinpath(f"classmaps/{spec}.yaml")
        text = shipped.read_text("utf-8")
        source = f"{spec} (shipped)"
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HemacnnError(f"cannot read class map {path}: {exc}") from None
        source = str(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise HemacnnError(f"class map {source} is not valid YAML ({first})") from None
    return parse_class_map(raw, source)


def parse_class_map(raw: Any, source: str) -> ClassMap:
    """Check a map's structure (not yet against a model)."""
    if not isinstance(raw, dict) or raw.get("format") != MAP_FORMAT:
        raise HemacnnError(f"class map {source} needs 'format: {MAP_FORMAT}' and a 'classes' "
                           "section (see hemacnn/scoring/classmaps/matek-pbc.yaml)")
    unknown = sorted(set(raw) - {"format", "name", "classes", "prefixes", "optional"})
    if unknown:
        raise HemacnnError(f"class map {source}: unknown key {unknown[0]}; valid keys: format, "
                           "name, classes, prefixes, optional")
    folders = raw.get("classes")
    if not isinstance(folders, dict) or not folders:
        raise HemacnnError(f"class map {source}: 'classes' must map folder names to class "
                           "codes")
    classes = {str(f): _class_list(v, f"class map {source}: classes.{f}")
               for f, v in folders.items()}
    prefixes: dict[str, dict[str, tuple[str, ...]]] = {}
    for folder, rules in (raw.get("prefixes") or {}).items():
        if not isinstance(rules, dict) or str(folder) not in classes:
            raise HemacnnError(f"class map {source}: prefixes.{folder} must be a mapping of "
                               "file-name prefixes for a folder listed under classes")
        prefixes[str(folder)] = {str(p): _class_list(v, f"class map {source}: "
                                                        f"prefixes.{folder}.{p}")
                                 for p, v in rules.items()}
    optional = raw.get("optional") or {}
    if not isinstance(optional, dict) or not all(
            v is None or isinstance(v, str) for v in optional.values()):
        raise HemacnnError(f"class map {source}: 'optional' maps a class code to the class "
                           "scored instead, or to null")
    return ClassMap(str(raw.get("name") or Path(source).stem), source, classes, prefixes,
                    {str(k): v for k, v in optional.items()})


def resolve(cmap: ClassMap, model_classes: Sequence[str], model: str = "the model"
            ) -> ResolvedMap:
    """Check ``cmap`` against a model's classes: a class it names and the model lacks (and the
    map does not mark optional) is a one-line error."""
    have = tuple(model_classes)

    def stand_in(code: str, where: str) -> str | None:
        if code in have:
            return code
        if code not in cmap.optional:
            raise HemacnnError(
                f"class map {cmap.source}: {where} names {code}, which {model} lacks (its "
                f"classes: {', '.join(have)}); fix the code or list it under 'optional'")
        sub = cmap.optional[code]
        return sub if sub in have else None

    truths = dict(cmap.classes)
    for folder, rules in cmap.prefixes.items():
        truths.update({f"{folder}/{p}": t for p, t in rules.items()})
    scored: dict[str, tuple[str, ...]] = {}
    left_out: dict[str, LeftOut] = {}
    for truth, targets in truths.items():
        where = f"prefixes.{truth.replace('/', '.')}" if "/" in truth else f"classes.{truth}"
        codes = [c for c in (stand_in(t, where) for t in targets) if c is not None]
        if codes:
            scored[truth] = tuple(dict.fromkeys(codes))
        else:
            left_out[truth] = LeftOut.MODEL_LACKS if targets else LeftOut.NO_COUNTERPART
    if not scored:
        raise HemacnnError(f"class map {cmap.source} scores none of {model}'s classes "
                           f"({', '.join(have)}); use a map written for this model")
    return ResolvedMap(cmap, have, scored, left_out)


def mapped_labels(targets: Sequence[Sequence[int]], probs: np.ndarray) -> np.ndarray:
    """One label per cell in the model's classes: the prediction when it is one of the cell's
    targets (so it counts as correct), else the cell's first target."""
    pred = probs.argmax(axis=1)
    return np.array([int(p) if int(p) in t else int(t[0])
                     for p, t in zip(pred, targets, strict=True)], dtype=np.int64)


def left_out_text(counts: dict[str, int]) -> str:
    """``basophil 100, erythroblast 100`` in order of the truth keys."""
    return ", ".join(f"{t} {n}" for t, n in sorted(counts.items()))


def _f(v: float | None) -> str:
    return "  n/a" if v is None else f"{v:.3f}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def side_by_side(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per scored model class: its in-domain test figures beside this dataset's."""
    cm = result["class_map"]
    inside = (cm.get("in_domain") or {}).get("per_class") or {}
    codes = list(dict.fromkeys(c for t in cm["scored"].values() for c in t))
    rows = []
    for code in codes:
        here, there = inside.get(code) or {}, result["per_class"].get(code) or {}
        rows.append({"class": code,
                     "in_domain": {k: here.get(k) for k in ("recall", "recall_ci", "f1",
                                                            "support")},
                     "other": {k: there.get(k) for k in ("recall", "recall_ci", "f1",
                                                         "support")}})
    return rows


def format_mapped(result: dict[str, Any]) -> list[str]:
    """The mapped evaluation's own lines: which truth scores as what, what was left out, and
    the in-domain / other-dataset table."""
    cm = result["class_map"]
    lines = ["", f"class map {cm['name']} ({cm['source']}): "
             + "; ".join(f"{t} -> {'/'.join(c)}" for t, c in cm["scored"].items())]
    counts = cm.get("left_out_counts") or {}
    if counts:
        lines.append(f"left out (not scored): {left_out_text(counts)}")
        reasons = {t: cm["left_out"].get(t, LeftOut.NOT_IN_MAP.value) for t in counts}
        lines.append("  why: " + "; ".join(f"{t}: {w}" for t, w in sorted(reasons.items())))
    inside = cm.get("in_domain")
    lines += ["", "in-domain test vs this dataset (recall [95% CI], F1, n):"]
    head = f"{'class':<8}{'in-domain':>34}{'this dataset':>34}{'F1 change':>11}"
    lines += [head, "-" * len(head)]
    for row in side_by_side(result):
        a, b = row["in_domain"], row["other"]

        def cell(v: dict[str, Any]) -> str:
            if v.get("support") is None:
                return "n/a"
            return f"{_f(v['recall'])} {_ci(v['recall_ci'])} {_f(v['f1'])} {v['support']}"

        delta = (f"{b['f1'] - a['f1']:+.3f}" if a.get("f1") is not None
                 and b.get("f1") is not None else "")
        lines.append(f"{row['class']:<8}{cell(a):>34}{cell(b):>34}{delta:>11}")
    mine = result["macro_f1"]
    if inside and inside.get("macro_f1") is not None:
        lines.append(f"macro F1: in-domain {inside['macro_f1']:.3f} ({inside['source']}), "
                     f"this dataset {mine:.3f}")
    else:
        lines.append(f"macro F1 on this dataset {mine:.3f}; no in-domain test evaluation in "
                     "the run folder (run `hemacnn evaluate RUN` first)")
    return lines


def report_blocks(result: dict[str, Any]) -> list[tuple]:
    """Report blocks (see :mod:`hemacnn.evaluation.report`) for one mapped evaluation: the
    in-domain / other-dataset table, the headline beside the run's own, what was left out."""
    cm = result["class_map"]
    blocks: list[tuple] = [("h3", f"Another dataset: {Path(result.get('data', '')).name} "
                                  f"(class map {cm['name']})")]
    head = ["class", "in-domain recall [95% CI]", "in-domain F1", "n",
            "this dataset recall [95% CI]", "this dataset F1", "n"]
    rows = []
    for row in side_by_side(result):
        a, b = row["in_domain"], row["other"]
        rows.append([row["class"], f"{_f(a['recall'])} {_ci(a['recall_ci'])}", _f(a["f1"]),
                     str(a["support"] if a["support"] is not None else "n/a"),
                     f"{_f(b['recall'])} {_ci(b['recall_ci'])}", _f(b["f1"]),
                     str(b["support"] if b["support"] is not None else "n/a")])
    blocks.append(("table", head, rows))
    inside = cm.get("in_domain") or {}
    hci = (result.get("headline_ci") or {}).get("macro_f1")
    text = (f"{result['n']} cells scored; macro F1 {result['macro_f1']:.3f}"
            + (f" {_ci(hci)}" if hci else "")
            + (f" against {inside['macro_f1']:.3f} on the run's own test split"
               if inside.get("macro_f1") is not None else "")
            + "; " + "; ".join(f"{t} scored as {'/'.join(c)}" for t, c in cm["scored"].items()))
    if cm.get("left_out_counts"):
        text += f". Left out (not scored): {left_out_text(cm['left_out_counts'])}"
    if result.get("adapt_bn"):
        text += f". Test-time adaptation: {result['adapt_bn']}"
    blocks.append(("p", text + "."))
    return blocks
