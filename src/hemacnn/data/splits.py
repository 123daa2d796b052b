"""Stratified, seeded train/validation/test splits, saved as plain file lists.

As in the paper (section III): a test fraction of each class is held out, then a validation
fraction of what remains. Unlike the paper (which drew validation from the shuffled training
part as a whole) the validation draw is stratified per class too, so small classes keep their
share in every split.

Rounding: each count is ``n * fraction`` rounded half up (computed exactly with fractions, so
345 * 0.10 = 34.5 gives 35), then clamped so that train, validation and test each keep at
least one image. Example, BLA with 330 images: test 33, val round(297 * 0.2 = 59.4) = 59,
train 238.

Every class is drawn with its own random generator, seeded by (seed, class code), so the
split of one class does not change when other classes are added to or dropped from the
selection.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from hemacnn.atomic import ensure_writable_dir, write_json, write_text
from hemacnn.classes import PAPER_CLASSES
from hemacnn.data.manifest import Entry
from hemacnn.errors import HemacnnError

SPLIT_NAMES = ("train", "val", "test")
Item = tuple[str, str]
"""(path relative to the data root in POSIX form, class code)."""


@dataclass
class Splits:
    """Train, validation and test file lists plus everything needed to redraw them."""

    train: list[Item]
    val: list[Item]
    test: list[Item]
    classes: list[str]
    seed: int = 0
    test_fraction: float = 0.10
    val_fraction: float = 0.20
    folds: int | None = None
    fold: int = 0
    extra: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Item]:
        """The list for ``name`` (train, val or test)."""
        if name not in SPLIT_NAMES:
            raise HemacnnError(f"unknown split {name!r}; choose one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class: ``{"train": {"BLA": n, ...}, ...}``."""
        out = {}
        for name in SPLIT_NAMES:
            c = Counter(label for _, label in self.split(name))
            out[name] = {code: c.get(code, 0) for code in self.classes}
        return out

    def label_index(self, code: str) -> int:
        """Integer label of a class code (its position in ``classes``)."""
        try:
            return self.classes.index(code)
        except ValueError:
            raise HemacnnError(
                f"class {code} is not one of the selected classes {', '.join(self.classes)}"
            ) from None

    def meta(self) -> dict:
        """The JSON-serialisable description written to splits.json."""
        return {
            "classes": list(self.classes),
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "val_fraction": self.val_fraction,
            "folds": self.folds,
            "fold": self.fold,
            "rounding": "half up, at least one image per split",
            "counts": self.counts(),
            **self.extra,
        }


def _round_half_up(n: int, fraction: float) -> int:
    # Fraction(str(x)) is the decimal the user wrote, so 345 * 0.1 is exactly 34.5.
    return math.floor(n * Fraction(str(fraction)) + Fraction(1, 2))


def _class_rng(seed: int, code: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(code.encode())])


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < float(value) < 1.0:
        raise HemacnnError(f"{name} must be between 0 and 1 (exclusive), got {value}")


@dataclass
class _Grouped:
    """Usable paths per class of the data, and the files the scan rejected per class."""

    usable: dict[str, list[str]]
    rejected: dict[str, list[Entry]]
    where: str

    def rejected_text(self, code: str) -> str:
        """'6 unreadable, 1 suspicious; e.g. LYT/x.jpg: truncated JPEG' for one class."""
        bad = self.rejected.get(code, [])
        kinds = Counter(e.status for e in bad)
        text = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        first = bad[0]
        return f"{text}; e.g. {first.path}: {first.detail}" if first.detail else text


def _group(entries: Iterable[Entry], classes: Sequence[str], root: str | None) -> _Grouped:
    """Usable paths per selected class (sorted, so the draw depends on the seed only)."""
    by_class: dict[str, list[str]] = defaultdict(list)
    rejected: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        (by_class[e.label].append(e.path) if e.usable else rejected[e.label].append(e))
    grouped = _Grouped({c: sorted(p) for c, p in by_class.items()}, dict(rejected),
                       root if root is not None else "the data")
    for code in classes:
        if code in by_class:
            continue
        if code in rejected:  # the folder is there, its files are not usable: say so
            n = len(rejected[code])
            raise HemacnnError(
                f"class {code} has no usable image in {grouped.where}: all {n} file"
                f"{'s were' if n != 1 else ' was'} rejected ({grouped.rejected_text(code)}); "
                f"run `hemacnn scan {root or 'DATA_DIR'}` to see each file's reason")
        present = ", ".join(sorted(by_class)) or "none"
        raise HemacnnError(
            f"class {code} not found in {grouped.where}; classes present: {present} — "
            "choose others with 'data.classes=[...]'"
        )
    return grouped


def _check_sizes(grouped: _Grouped, classes: Sequence[str], need: int) -> None:
    """Every selected class can be split; otherwise suggest only a selection that works."""
    small = [c for c in classes if len(grouped.usable[c]) < need]
    if not small:
        return
    code = small[0]
    n = len(grouped.usable[code])
    lost = (f" ({len(grouped.rejected[code])} more rejected: {grouped.rejected_text(code)})"
            if code in grouped.rejected else "")
    enough = [c for c in classes if c not in small]
    if len(enough) >= 2:
        fix = f"drop it with 'data.classes=[{','.join(enough)}]' or add images"
    else:
        able = sorted(c for c, p in grouped.usable.items() if len(p) >= need)
        fix = ("add images, or choose two or more of the classes that have enough: "
               f"{', '.join(able)}" if len(able) >= 2 else "add images")
    raise HemacnnError(
        f"class {code} has {n} usable image{'s' if n != 1 else ''}{lost}; at least {need} are "
        f"needed to split train/val/test — {fix}")


def _val_count(n_rest: int, val_fraction: float) -> int:
    return min(max(1, _round_half_up(n_rest, val_fraction)), n_rest - 1)


def make_splits(
    entries: Iterable[Entry],
    classes: Sequence[str] = PAPER_CLASSES,
    test_fraction: float = 0.10,
    val_fraction: float = 0.20,
    seed: int = 0,
    folds: int | None = None,
    fold: int = 0,
    root: str | None = None,
) -> Splits:
    """Stratified, seeded split of the usable entries of ``classes`` (order kept as given)."""
    classes = [str(c) for c in classes]
    if not classes:
        raise HemacnnError("no classes selected; set data.classes=[...] to at least two codes")
    dupes = sorted(c for c, k in Counter(classes).items() if k > 1)
    if dupes:
        raise HemacnnError(f"class {dupes[0]} is listed twice in data.classes; list it once")
    _check_fraction("val_fraction", val_fraction)
    if folds is None:
        _check_fraction("test_fraction", test_fraction)
    elif int(folds) < 2 or not 0 <= int(fold) < int(folds):
        raise HemacnnError(f"k-fold needs folds >= 2 and 0 <= fold < folds, got folds={folds} "
                           f"fold={fold}")
    grouped = _group(entries, classes, root)
    # k-fold: each fold's remaining (k-1)/k must still give one validation and one training image.
    need = 3 if folds is None else max(3, math.ceil(2 * int(folds) / (int(folds) - 1)), int(folds))
    _check_sizes(grouped, classes, need)
    train: list[Item] = []
    val: list[Item] = []
    test: list[Item] = []
    if folds is None:
        for code in classes:
            paths = grouped.usable[code]
            n = len(paths)
            n_test = min(max(1, _round_half_up(n, test_fraction)), n - 2)
            n_val = _val_count(n - n_test, val_fraction)
            order = _class_rng(seed, code).permutation(n)
            picked = [(paths[i], code) for i in order]
            test += picked[:n_test]
            val += picked[n_test:n_test + n_val]
            train += picked[n_test + n_val:]
        return Splits(train, val, test, classes, seed, test_fraction, val_fraction)
    return _kfold(grouped.usable, classes, val_fraction, seed, int(folds), int(fold))


def _kfold(grouped: dict[str, list[str]], classes: list[str], val_fraction: float, seed: int,
           folds: int, fold: int) -> Splits:
    """Fold ``fold`` of a stratified k-fold split is the test set; val is drawn from the rest."""
    from sklearn.model_selection import StratifiedKFold

    paths = [p for code in classes for p in grouped[code]]
    labels = [code for code in classes for _ in grouped[code]]
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    rest_idx, test_idx = list(skf.split(np.zeros(len(paths)), labels))[fold]
    test = [(paths[i], labels[i]) for i in sorted(test_idx)]
    rest: dict[str, list[str]] = defaultdict(list)
    for i in rest_idx:
        rest[labels[i]].append(paths[i])
    train: list[Item] = []
    val: list[Item] = []
    for code in classes:
        members = sorted(rest[code])
        n_val = _val_count(len(members), val_fraction)
        order = _class_rng(seed, code).permutation(len(members))
        val += [(members[i], code) for i in order[:n_val]]
        train += [(members[i], code) for i in order[n_val:]]
    test_fraction = round(1.0 / folds, 6)
    return Splits(train, val, test, classes, seed, test_fraction, val_fraction, folds, fold)


def _items_csv(items: list[Item]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("path", "class"))
    w.writerows(items)
    return buf.getvalue()


def save_splits(splits: Splits, folder: str | Path) -> Path:
    """Write train.csv, val.csv, test.csv (path,class) and splits.json into ``folder``."""
    folder = ensure_writable_dir(Path(folder))
    for name in SPLIT_NAMES:
        write_text(folder / f"{name}.csv", _items_csv(splits.split(name)))
    write_json(folder / "splits.json", splits.meta())
    return folder


def _read_items(path: Path, classes: list[str]) -> list[Item]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HemacnnError(f"cannot read split file {path}: {exc.strerror or exc}; "
                           "save the splits again or point to another run folder") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header != ["path", "class"]:
        raise HemacnnError(f"{path} is not a split file (expected the header path,class)")
    items = []
    for lineno, row in enumerate(reader, start=2):
        if len(row) != 2 or row[1] not in classes:
            raise HemacnnError(f"{path} line {lineno}: expected path,class with a class among "
                               f"{', '.join(classes)}, got {','.join(row)!r}")
        items.append((row[0], row[1]))
    return items


def load_splits(folder: str | Path) -> Splits:
    """Read splits saved by :func:`save_splits`."""
    folder = Path(folder)
    meta_path = folder / "splits.json"
    if not meta_path.is_file():
        raise HemacnnError(f"no saved splits in {folder} (splits.json missing); "
                           "give the folder that holds train.csv, val.csv, test.csv, splits.json")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        classes = [str(c) for c in meta["classes"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HemacnnError(f"{meta_path} is not a valid splits file ({exc}); "
                           "save the splits again") from None
    lists = {name: _read_items(folder / f"{name}.csv", classes) for name in SPLIT_NAMES}
    return Splits(
        lists["train"], lists["val"], lists["test"], classes,
        seed=int(meta.get("seed", 0)),
        test_fraction=float(meta.get("test_fraction", 0.10)),
        val_fraction=float(meta.get("val_fraction", 0.20)),
        folds=meta.get("folds"),
        fold=int(meta.get("fold", 0)),
    )
