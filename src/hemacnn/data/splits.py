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
from sklearn.model_selection import StratifiedKFold

from hemacnn.atomic import ensure_writable_dir, write_json, write_text
from hemacnn.classes import PAPER_CLASSES
from hemacnn.data.manifest import Entry
from hemacnn.errors import HemacnnError, command_line

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


def _class_rng(seed: int, code: str, *stream: int) -> np.random.Generator:
    """A class's own generator; ``stream`` words give further independent draws of it."""
    return np.random.default_rng([seed, zlib.crc32(code.encode()), *stream])


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < float(value) < 1.0:
        raise HemacnnError(f"{name} must be between 0 and 1 (exclusive), got {value}")


def _rejected_text(bad: list[Entry]) -> str:
    """'6 unreadable, 1 suspicious; e.g. LYT/x.jpg: truncated JPEG' for one class's rejects."""
    kinds = Counter(e.status for e in bad)
    text = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    return f"{text}; e.g. {bad[0].path}: {bad[0].detail}" if bad[0].detail else text


def _group(entries: Iterable[Entry], classes: Sequence[str] | None, root: str | None
           ) -> dict[str, list]:
    """Usable paths per selected class (sorted, so the draw depends on the seed only).

    ``classes=None`` selects every class that has a usable image, in sorted order.
    """
    by_class: dict[str, list[str]] = defaultdict(list)
    rejected: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        (by_class[e.label].append(e.path) if e.usable else rejected[e.label].append(e))
    where = root if root is not None else "the data"
    if classes is None:
        classes = sorted(by_class)
    for code in classes:
        if code in by_class:
            continue
        if code in rejected:  # the folder is there, its files are not usable: say so
            n = len(rejected[code])
            raise HemacnnError(
                f"class {code} has no usable image in {where}: all {n} file"
                f"{'s were' if n != 1 else ' was'} rejected ({_rejected_text(rejected[code])}); "
                f"run `{command_line('scan', root or 'DATA_DIR')}` to see each file's reason")
        present = ", ".join(sorted(by_class)) or "none"
        raise HemacnnError(
            f"class {code} not found in {where}; classes present: {present} — "
            "choose others with 'data.classes=[...]' (or data.classes=all for every class)"
        )
    return {code: sorted(by_class[code]) for code in classes}


def _too_small(code: str, n: int, need: int, classes: Sequence[str],
               grouped: dict[str, list]) -> HemacnnError:
    """The error for a class too small to split; it suggests only selections that then work."""
    enough = [c for c in classes if len(grouped[c]) >= need]
    if len(enough) >= 2:
        fix = (f"drop it with 'data.classes=[{','.join(enough)}]', leave out every class this "
               "small with data.rare_classes=drop, or add images")
    else:
        fix = "add images or choose other classes (`hemacnn scan` lists them with their counts)"
    return HemacnnError(
        f"class {code} has {n} usable image{'s' if n != 1 else ''}; at least {need} are needed "
        f"to split train/val/test — {fix}"
    )


def _val_count(n_rest: int, val_fraction: float, m: int = 1) -> int:
    return min(max(m, _round_half_up(n_rest, val_fraction)), n_rest - m)


def images_needed(min_per_split: int = 1, folds: int | None = None,
                  fold_test: str = "rotate") -> int:
    """Fewest usable images a class needs for ``min_per_split`` images in every split."""
    m = int(min_per_split)
    if folds is None:
        return 3 * m
    k = int(folds)
    if fold_test == "holdout":  # test first, then k validation folds of the rest
        return m + k * m
    # Each fold is a test set once; its remaining (k-1)/k must still give validation and training.
    return max(3 * m, math.ceil(2 * m * k / (k - 1)), k * m)


def make_splits(
    entries: Iterable[Entry],
    classes: Sequence[str] | None = PAPER_CLASSES,
    test_fraction: float = 0.10,
    val_fraction: float = 0.20,
    seed: int = 0,
    folds: int | None = None,
    fold: int = 0,
    root: str | None = None,
    min_per_split: int = 1,
    rare_classes: str = "keep",
    fold_test: str = "rotate",
    train_fraction: float = 1.0,
) -> Splits:
    """Stratified, seeded split of the usable entries of ``classes`` (order kept as given).

    ``train_fraction < 1`` then keeps only that share of each class's training images (a
    learning curve): validation and test stay exactly as with the whole training split, and a
    smaller fraction's training images are a subset of a larger one's (same seed).

    ``classes=None`` (or ``"all"``) takes every class present. A class with fewer images than
    :func:`images_needed` is an error with ``rare_classes="keep"`` and is left out, and listed
    under ``dropped_classes`` in the splits' metadata, with ``rare_classes="drop"``.
    """
    if isinstance(classes, str):  # "all" (a plain string is never a list of codes)
        classes = None
    if classes is not None:
        classes = [str(c) for c in classes]
        if not classes:
            raise HemacnnError("no classes selected; set data.classes=[...] to at least two "
                               "codes or data.classes=all")
        dupes = sorted(c for c, k in Counter(classes).items() if k > 1)
        if dupes:
            raise HemacnnError(f"class {dupes[0]} is listed twice in data.classes; list it once")
    if rare_classes not in ("keep", "drop"):
        raise HemacnnError(f"rare_classes must be keep or drop, got {rare_classes!r}")
    if fold_test not in ("rotate", "holdout"):
        raise HemacnnError(f"fold_test must be rotate or holdout, got {fold_test!r}")
    m = int(min_per_split)
    if m < 1:
        raise HemacnnError(f"min_per_split must be at least 1, got {min_per_split}")
    _check_fraction("val_fraction", val_fraction)
    if not 0.0 < float(train_fraction) <= 1.0:
        raise HemacnnError(f"train_fraction must be above 0 and at most 1, got {train_fraction}")
    if folds is None or fold_test == "holdout":
        _check_fraction("test_fraction", test_fraction)
    if folds is not None and (int(folds) < 2 or not 0 <= int(fold) < int(folds)):
        raise HemacnnError(f"k-fold needs folds >= 2 and 0 <= fold < folds, got folds={folds} "
                           f"fold={fold}")
    grouped = _group(entries, classes, root)
    classes = list(grouped)
    need = images_needed(m, folds, fold_test)
    small = {c: len(grouped[c]) for c in classes if len(grouped[c]) < need}
    if small and rare_classes == "keep":
        code = next(iter(small))
        raise _too_small(code, small[code], need, classes, grouped)
    if small:
        classes = [c for c in classes if c not in small]
        if len(classes) < 2:
            raise HemacnnError(
                f"only {len(classes)} class(es) keep at least {need} usable images after "
                f"leaving out {', '.join(small)}; add images or lower data.min_per_split")
    extra = {"min_per_split": m, "rare_classes": rare_classes,
             "dropped_classes": {c: small[c] for c in small},
             "images_needed": need}
    if folds is not None:
        extra["fold_test"] = fold_test
        splitter = _kfold_holdout if fold_test == "holdout" else _kfold
        train, val, test = splitter(grouped, classes, test_fraction, val_fraction, seed,
                                    int(folds), int(fold), m)
        tf = test_fraction if fold_test == "holdout" else round(1.0 / int(folds), 6)
        train = _train_share(train, classes, train_fraction, seed, m, extra)
        return Splits(train, val, test, classes, seed, tf, val_fraction, int(folds), int(fold),
                      extra)
    train, val, test = [], [], []
    for code in classes:
        n_test, picked = _test_draw(grouped[code], code, test_fraction, seed, 2 * m, m)
        n_val = _val_count(len(picked) - n_test, val_fraction, m)
        test += picked[:n_test]
        val += picked[n_test:n_test + n_val]
        train += picked[n_test + n_val:]
    train = _train_share(train, classes, train_fraction, seed, m, extra)
    return Splits(train, val, test, classes, seed, test_fraction, val_fraction, extra=extra)


def _train_share(train: list[Item], classes: list[str], fraction: float, seed: int, m: int,
                 extra: dict) -> list[Item]:
    """``fraction`` of each class's training images (half up, at least ``m``), order kept.

    Each class draws one seeded order of its sorted training images and keeps its first k, so
    the images kept at 0.25 are among those kept at 0.5. Recorded in ``extra``.
    """
    if float(fraction) >= 1.0:
        return train
    keep: set[Item] = set()
    for code in classes:
        members = sorted(x for x in train if x[1] == code)
        k = min(len(members), max(m, _round_half_up(len(members), fraction)))
        order = _class_rng(seed, code, 1).permutation(len(members))
        keep.update(members[i] for i in order[:k])
    extra["train_fraction"] = float(fraction)
    extra["train_unused"] = len(train) - len(keep)
    return [x for x in train if x in keep]


def _test_draw(paths: list[str], code: str, test_fraction: float, seed: int, keep: int,
               m: int) -> tuple[int, list[Item]]:
    """A class's seeded order and its test count (at least m, leaving at least ``keep``)."""
    n = len(paths)
    n_test = min(max(m, _round_half_up(n, test_fraction)), n - keep)
    order = _class_rng(seed, code).permutation(n)
    return n_test, [(paths[i], code) for i in order]


SplitLists = tuple[list[Item], list[Item], list[Item]]


def _kfold(grouped: dict[str, list[str]], classes: list[str], test_fraction: float,
           val_fraction: float, seed: int, folds: int, fold: int, m: int) -> SplitLists:
    """Fold ``fold`` of a stratified k-fold split is the test set; val is drawn from the rest."""
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
        n_val = _val_count(len(members), val_fraction, m)
        order = _class_rng(seed, code).permutation(len(members))
        val += [(members[i], code) for i in order[:n_val]]
        train += [(members[i], code) for i in order[n_val:]]
    return train, val, test


def _kfold_holdout(grouped: dict[str, list[str]], classes: list[str], test_fraction: float,
                   val_fraction: float, seed: int, folds: int, fold: int, m: int
                   ) -> SplitLists:
    """One test split for every fold (the plain split's draw); fold ``fold`` of the rest is val."""
    test: list[Item] = []
    rest: list[Item] = []
    for code in classes:
        n_test, picked = _test_draw(grouped[code], code, test_fraction, seed, folds * m, m)
        test += picked[:n_test]
        rest += sorted(picked[n_test:])
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_idx, val_idx = list(skf.split(np.zeros(len(rest)), [c for _, c in rest]))[fold]
    return [rest[i] for i in train_idx], [rest[i] for i in sorted(val_idx)], test


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
    known = {"classes", "seed", "test_fraction", "val_fraction", "folds", "fold", "rounding",
             "counts"}
    return Splits(
        lists["train"], lists["val"], lists["test"], classes,
        seed=int(meta.get("seed", 0)),
        test_fraction=float(meta.get("test_fraction", 0.10)),
        val_fraction=float(meta.get("val_fraction", 0.20)),
        folds=meta.get("folds"),
        fold=int(meta.get("fold", 0)),
        extra={k: v for k, v in meta.items() if k not in known},
    )
