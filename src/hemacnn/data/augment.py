"""Augmentation: the paper's offline 90° copies and on-the-fly dihedral transforms.

Cell images have no preferred orientation, so the 8 symmetries of the square (4 rotations,
each optionally mirrored) are label-preserving. Training only: validation and test data are
never transformed (the evaluator's test-time augmentation uses :func:`dihedral` explicitly).

Determinism: the random choice of transform is made in the sampler, in the main process, from a
generator seeded by (seed, epoch), and travels with the sample index to the worker that loads
it. So the same seed gives the same transforms whatever the number of DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from hemacnn.data.stain import hed_transform

N_DIHEDRAL = 8


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply dihedral transform ``k`` (0..7) to a CHW or NCHW tensor.

    ``k % 4`` quarter turns counter-clockwise (``torch.rot90``), then, for ``k >= 4``, a
    left-right flip. ``k = 0`` is the identity.
    """
    if not 0 <= int(k) < N_DIHEDRAL:
        raise ValueError(f"dihedral transform index must be in 0..7, got {k}")
    dims = (x.ndim - 2, x.ndim - 1)
    out = torch.rot90(x, int(k) % 4, dims=dims) if k % 4 else x
    if k >= 4:
        out = torch.flip(out, dims=(dims[1],))
    return out


def dihedral_transforms() -> list[int]:
    """The indices of all 8 dihedral transforms (for test-time augmentation)."""
    return list(range(N_DIHEDRAL))


def offline_rotated_items(items: Sequence[tuple[int, int]], labels_to_rotate: set[int]
                          ) -> list[tuple[int, int, int]]:
    """(row, label) items plus, for each listed label, a copy marked to be turned 90°.

    The paper (IV-C) balanced band neutrophils this way: each training NGB image is added
    once more, rotated by 90°. Returns (row, label, quarter_turns).
    """
    out = [(row, label, 0) for row, label in items]
    out += [(row, label, 1) for row, label in items if label in labels_to_rotate]
    return out


class SeededShuffleSampler(Sampler):
    """Shuffles indices from (seed, epoch); optionally pairs each with a random transform.

    Yields plain ints, or ``(index, k)`` with ``k`` in 0..7 when ``augment`` is set, so the
    per-sample transform is fixed here and not in the (possibly many) worker processes.
    Lightning calls :meth:`set_epoch` each epoch, so a resumed run redraws the same order.
    """

    stream: tuple[int, ...] = ()  # extra seed words: subclasses draw an independent stream

    def __init__(self, n: int, seed: int = 0, augment: bool = False) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` on the next iteration."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def order(self, rng: np.random.Generator) -> list[int]:
        """The indices of one epoch (a subclass draws another order from the same rng)."""
        return rng.permutation(self.n).tolist()

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch, *self.stream])
        # Without Lightning nobody calls set_epoch: move on so each epoch differs.
        self.epoch += 1
        order = self.order(rng)
        if not self.augment:
            return iter(order)
        ks = rng.integers(0, N_DIHEDRAL, size=len(order)).tolist()
        return iter(zip(order, ks, strict=True))


def stain_transform(image_size: int, stain_jitter: float = 0.0, crop_scale: float | None = None,
                    hed_jitter: float = 0.0) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Per-image random transforms for stained cells (torchvision.transforms.v2), or None.

    ``stain_jitter`` s: brightness, contrast and saturation factors in [1-s, 1+s] and a hue
    shift of up to s/4 (small, because the stain's colours carry the class). ``crop_scale``
    a: a random resized crop keeping [a, 1] of the area at aspect 3/4..4/3, back to the input
    size (cells are centred in Matek's crops, so a stays large, e.g. 0.7). ``hed_jitter``: the
    HED colour augmentation (:class:`hemacnn.data.stain.HedJitter`). Training only; acts
    on uint8 CHW tensors and draws from torch's generator (seeded per run and per worker).
    """
    # lazy: torchvision ~1.9 s beyond torch (importtime, measured under load); predict imports
    # this module (dihedral TTA) and never trains
    from torchvision.transforms import v2

    steps: list[Callable] = []
    if crop_scale is not None:
        steps.append(v2.RandomResizedCrop(image_size, scale=(crop_scale, 1.0), antialias=True))
    hed = hed_transform(hed_jitter)
    if hed is not None:
        steps.append(hed)
    if stain_jitter > 0:
        steps.append(v2.ColorJitter(brightness=stain_jitter, contrast=stain_jitter,
                                    saturation=stain_jitter, hue=stain_jitter / 4))
    return v2.Compose(steps) if steps else None
