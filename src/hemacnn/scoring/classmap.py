"""Another dataset's classes in a model's terms: a class map, resolved against one model.

A map file (YAML, ``format: hemacnn-classmap/1``) says which model classes each folder of the
other dataset may be called: ``classes`` (folder -> any of these; an empty list: no counterpart),
``prefixes`` (inside a folder, a file-name prefix overrides the folder's entry, as PBC's
``BNE_``/``SNE_`` neutrophils need) and ``optional`` (model classes a model may lack, with the
class to score instead or null). Any other class named in the map that the model lacks is an
error: a typo would otherwise quietly leave a whole class out.

Read backwards, a resolved map sends each model class to the one folder of the other dataset
it stands for (:attr:`ResolvedMap.target_of`; a prefix rule's classes belong to its folder), so
a prediction can be said in that dataset's terms: :mod:`hemacnn.scoring.mapped` scores there. A
model class that two folders claim (after the ``optional`` stand-ins) is therefore an error at
:func:`resolve`: a call of it would name neither folder, and scoring it as both would count
one prediction twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

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
    target_of: dict[str, str]
    """Model class -> the folder of the other dataset it stands for (classes with no
    counterpart are absent)."""

    @property
    def targets(self) -> tuple[str, ...]:
        """The other dataset's folders that have a counterpart: its classes as scored."""
        mapped = set(self.target_of.values())
        return tuple(f for f in self.cmap.classes if f in mapped)  # the map's order

    def correct(self, targets: Sequence[str], code: str) -> bool:
        """Whether a call of ``code`` names the folder of a cell scored as ``targets``."""
        return self.target_of.get(code) == self.target_of[targets[0]]

    def members(self, target: str) -> tuple[str, ...]:
        """The model classes that stand for folder ``target``."""
        return tuple(c for c in self.model_classes if self.target_of.get(c) == target)

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
                "targets": {t: list(self.members(t)) for t in self.targets},
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
    target_of: dict[str, str] = {}
    for truth, codes in scored.items():
        folder = truth.partition("/")[0]
        for code in codes:
            if target_of.setdefault(code, folder) != folder:
                raise HemacnnError(
                    f"class map {cmap.source}: {code} stands for both {target_of[code]} and "
                    f"{folder} (after the 'optional' stand-ins, for {model}); a model class may "
                    "stand for one folder only, so that each prediction names one of them")
    order = {c: i for i, c in enumerate(have)}
    return ResolvedMap(cmap, have, scored, left_out,
                       dict(sorted(target_of.items(), key=lambda kv: order[kv[0]])))


def left_out_text(counts: dict[str, int]) -> str:
    """``basophil 100, erythroblast 100`` in order of the truth keys."""
    return ", ".join(f"{t} {n}" for t, n in sorted(counts.items()))
