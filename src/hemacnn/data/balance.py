"""Class imbalance on the data side: an ``OTHER`` class, a class-balanced sampler, loss weights.

- :func:`pool_other` relabels every image of an unselected class as ``OTHER``, so a model
  trained on a few classes meets the rest of a real smear with an honest answer.
- :class:`BalancedSampler` draws a fixed budget of samples per class each epoch (MarroVision
  draws 10,000 per class), without replacement where a class has enough images, with
  replacement where it has fewer; like :class:`SeededShuffleSampler` it is seeded by
  (seed, epoch) and carries each sample's dihedral transform when augmenting.
- :func:`inverse_frequency_weights` gives the loss weights n / (k * n_class).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from hemacnn.classes import OTHER_CODE
from hemacnn.data.augment import SeededShuffleSampler
from hemacnn.data.manifest import Entry
from hemacnn.errors import HemacnnError


def pool_other(entries: Sequence[Entry], classes: Sequence[str], other: bool | Sequence[str]
               ) -> tuple[list[Entry], list[str]]:
    """Entries with unselected classes relabelled ``OTHER``, and the classes plus ``OTHER``.

    ``other`` is True (pool every unselected class) or a list of the classes to pool (the rest
    are left out, e.g. to keep some cell types unseen for an open-set test).
    """
    if OTHER_CODE in classes:
        raise HemacnnError(f"data.classes already holds {OTHER_CODE}; remove it or set "
                           "imbalance.other=false")
    selected = set(classes)
    pooled = (lambda label: label not in selected) if other is True else set(other).__contains__
    present = {e.label for e in entries if e.usable}
    if other is not True:
        missing = sorted(set(other) - present)
        if missing:
            raise HemacnnError(f"imbalance.other names {', '.join(missing)}, not found in the "
                               f"data; classes present: {', '.join(sorted(present))}")
    out = [dataclasses.replace(e, label=OTHER_CODE) if pooled(e.label) else e for e in entries]
    if not any(e.usable and e.label == OTHER_CODE for e in out):
        raise HemacnnError("imbalance.other: every class in the data is selected, so there is "
                           "nothing to pool into OTHER; set imbalance.other=false")
    return out, [*classes, OTHER_CODE]


def inverse_frequency_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Loss weight per class, n / (k * n_c): every class contributes equally on average."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        raise HemacnnError("imbalance.class_weights: a class has no training images")
    return (counts.sum() / (n_classes * counts)).astype(np.float32)


class BalancedSampler(SeededShuffleSampler):
    """``per_class`` draws of every class per epoch, shuffled together, seeded by (seed, epoch).

    ``per_class`` None means the largest class's size (every class oversampled to it).
    Yields ints, or ``(index, k)`` pairs with a dihedral transform ``k`` when ``augment``.
    """

    stream = (1,)

    def __init__(self, labels: Sequence[int], per_class: int | None = None, seed: int = 0,
                 augment: bool = False) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        self.by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self.per_class = int(per_class or max(len(ix) for ix in self.by_class))
        super().__init__(self.per_class * len(self.by_class), seed, augment)

    def order(self, rng: np.random.Generator) -> list[int]:
        draws = []
        for ix in self.by_class:
            # Whole permutations first, so no image repeats before every image was drawn.
            reps = -(-self.per_class // len(ix))
            draws.append(np.concatenate([rng.permutation(ix) for _ in range(reps)])
                         [:self.per_class])
        return rng.permutation(np.concatenate(draws)).tolist()
