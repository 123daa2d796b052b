"""The Dataset and LightningDataModule: scan -> splits -> cache -> batches of floats in [0, 1].

Images are decoded once into the memory-mapped cache (:mod:`hemacnn.data.cache`); a batch is
then a slice copy plus a division by 255, as the paper's batch generator did (section III).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hemacnn.config import Config
from hemacnn.data.augment import (
    SeededShuffleSampler,
    dihedral,
    offline_rotated_items,
    stain_transform,
)
from hemacnn.data.balance import BalancedSampler, pool_other
from hemacnn.data.cache import ImageCache, build_cache
from hemacnn.data.colour import REFERENCE_IMAGES, sample_index
from hemacnn.data.manifest import Entry, manifest_hash
from hemacnn.data.scan import load_or_scan
from hemacnn.data.splits import Item, Splits, load_splits, make_splits
from hemacnn.data.stain import StainNormalizer
from hemacnn.errors import HemacnnError


class NormalizedImages:
    """An image store whose images are stain-normalised on first use (then kept in memory)."""

    def __init__(self, images: ImageCache, normalizer: Any) -> None:
        self.images, self.normalizer = images, normalizer
        self._done: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.images)

    def __contains__(self, path: str) -> bool:
        return path in self.images

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        """Row numbers of ``paths``."""
        return self.images.rows(paths)

    def get(self, i: int) -> np.ndarray:
        """Image ``i`` normalised, uint8 (size, size, 3)."""
        if i not in self._done:
            self._done[i] = self.normalizer(self.images.get(i)[None])[0]
        return self._done[i]


class CellDataset(Dataset):
    """(path, class) items over an image store -> (float32 3xHxW in [0, 1], int64 label)."""

    def __init__(self, images: ImageCache | NormalizedImages, items: Sequence[Item],
                 classes: Sequence[str], offline_rotate: Sequence[str] = (),
                 augment: bool = False, seed: int = 0, extra: Callable | None = None,
                 balanced: int | bool | None = None) -> None:
        self.images = images
        self.classes = list(classes)
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({label for _, label in items if label not in index})
        if unknown:
            raise HemacnnError(f"class {unknown[0]} is not one of the model's classes "
                               f"{', '.join(self.classes)}; drop those files or retrain")
        rows = images.rows([p for p, _ in items]).tolist()
        base = [(r, index[label]) for r, (_, label) in zip(rows, items, strict=True)]
        rotate = {index[c] for c in offline_rotate if c in index}
        self.items = offline_rotated_items(base, rotate)
        self.paths = [p for p, _ in items] + [p for p, label in items if index[label] in rotate]
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.extra = extra  # random per-image transforms on uint8 (training only)
        self.balanced = balanced  # None: shuffle; True or a per-class budget: BalancedSampler

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray:
        """Integer label of every sample, in order (offline copies included)."""
        return np.array([label for _, label, _ in self.items], dtype=np.int64)

    def sampler(self) -> Sampler:
        """The seeded shuffling (or class-balanced) sampler; it also draws each transform."""
        if self.balanced is not None:
            per_class = None if self.balanced is True else int(self.balanced)
            return BalancedSampler(self.labels(), per_class, self.seed, self.augment)
        return SeededShuffleSampler(len(self), self.seed, self.augment)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, tuple):
            i, k = int(index[0]), int(index[1])
        else:
            i, k = int(index), None
        row, label, turns = self.items[i]
        # One copy out of the memory map, straight into CHW order.
        x = torch.from_numpy(np.ascontiguousarray(self.images.get(row).transpose(2, 0, 1)))
        if turns:
            x = torch.rot90(x, turns, dims=(1, 2))
        if self.augment:
            if k is None:  # plain int index (no SeededShuffleSampler): draw from (seed, epoch, i)
                k = int(np.random.default_rng([self.seed, self.epoch, i]).integers(8))
            x = dihedral(x, k)
        if self.extra is not None:
            x = self.extra(x)
        return x.float().div_(255.0), torch.tensor(label, dtype=torch.int64)


class ResumableLoader(DataLoader):
    """A training DataLoader that Lightning can stop and resume in the middle of an epoch.

    Lightning saves ``state_dict()`` in every checkpoint and calls ``load_state_dict()`` before
    iterating again. The state is how many batches of the current epoch were trained
    (``position()``, read from the trainer); on resume those are drawn and skipped, so the
    rest of the epoch sees the same batches in the same order as a run never stopped.
    """

    def __init__(self, *args: Any, position: Callable[[], int] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.position = position
        self._skip = 0

    def state_dict(self) -> dict[str, int]:
        """Batches of the unfinished epoch already trained (0 at an epoch's end)."""
        return {"batches_done": int(self.position()) if self.position else 0}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Skip that many batches on the next iteration."""
        self._skip = int(state_dict.get("batches_done", 0))

    def __iter__(self) -> Iterator:
        skip, self._skip = self._skip, 0
        if not skip:
            return super().__iter__()
        # Making the iterator draws a worker seed from torch's generator; the checkpoint's state
        # already holds that draw (made when the epoch began), so it must not be drawn twice.
        rng = torch.get_rng_state()
        it = super().__iter__()
        torch.set_rng_state(rng)
        return _skipping(it, skip)


def _skipping(it: Iterator, n: int) -> Iterator:
    # A generator, so nothing is drawn before Lightning's set_epoch() has chosen the order.
    for _ in range(n):
        next(it, None)
    yield from it


class HemaDataModule(L.LightningDataModule):
    """Scan, split and cache a labelled image folder; serve train/val/test loaders."""

    def __init__(self, cfg: Config, splits_dir: str | os.PathLike | None = None,
                 progress: bool = True, cache_workers: int | None = None) -> None:
        """Batches as ``cfg`` describes them: its data section, the imbalance sampler and
        pooling, the recipe's extra augmentation and the seed (defaults: :mod:`hemacnn.config`).

        ``splits_dir``: reuse saved splits (a resumed run) instead of making them.
        """
        super().__init__()
        d, imb = cfg.data, cfg.imbalance
        if not d.root:
            raise HemacnnError("data.root is not set; pass "
                               "data.root=/path/to/BM_cytomorphology_data")
        self.cfg = cfg
        self.root = Path(d.root)
        # "all": every class folder with usable images (known after setup).
        self.classes = None if isinstance(d.classes, str) else list(d.classes)
        self.seed = cfg.seed
        # The split may have its own seed, so runs that differ only in seed share one split.
        self.split_seed = self.seed if d.split_seed is None else d.split_seed
        self.image_size = d.image_size
        self.batch_size = d.batch_size
        self.splits_dir = Path(splits_dir) if splits_dir is not None else None
        self.progress = progress
        self.cache_workers = cache_workers
        # Imbalance and richer augmentation options; the defaults change nothing.
        self.other = imb.other if imb.other is True or not imb.other else list(imb.other)
        # None: shuffle; True or a per-class budget: BalancedSampler.
        self.balanced = None if imb.sampler != "balanced" else (
            imb.per_class if imb.per_class is not None else True)
        self.extra = stain_transform(self.image_size, cfg.recipe.stain_jitter,
                                     cfg.recipe.crop_scale, cfg.recipe.hed_jitter)
        self.stain: Any = None  # a StainNormalizer once set_stain_norm() has one
        self._normalized: NormalizedImages | None = None
        self.entries: list[Entry] | None = None
        self.splits: Splits | None = None
        self.cache: ImageCache | None = None
        self.manifest_hash: str | None = None

    @property
    def class_codes(self) -> list[str]:
        """Class codes in label order (known after setup)."""
        if self.splits is None:
            self._prepare()
        return list(self.splits.classes)

    def prepare_data(self) -> None:
        """Scan and build the cache (Lightning runs this on one process per node first)."""
        self._prepare()

    def setup(self, stage: str | None = None) -> None:
        """Load manifest, splits and cache (reused when prepare_data already built them)."""
        self._prepare()

    def _prepare(self) -> None:
        if self.cache is not None:
            return
        d = self.cfg.data
        entries = load_or_scan(self.root, progress=self.progress)
        usable = {e.path: e for e in entries if e.usable}
        if self.splits_dir is not None:
            splits = load_splits(self.splits_dir)
            missing = [p for p, _ in splits.train + splits.val + splits.test if p not in usable]
            if missing:
                raise HemacnnError(f"{len(missing)} file(s) of the saved splits in "
                                   f"{self.splits_dir} are missing or unusable in {self.root} "
                                   f"(first: {missing[0]}); use the data folder of that run")
        else:
            split_entries, classes = entries, self.classes
            if self.other:
                if classes is None:
                    raise HemacnnError("imbalance.other pools the classes not selected: give "
                                       "data.classes as a list, not all")
                split_entries, classes = pool_other(entries, self.classes, self.other)
                usable = {e.path: e for e in split_entries if e.usable}
            splits = make_splits(split_entries, classes, d.test_fraction, d.val_fraction,
                                 self.split_seed, d.folds, d.fold, root=str(self.root),
                                 min_per_split=d.min_per_split,
                                 rare_classes=d.rare_classes, fold_test=d.fold_test,
                                 train_fraction=d.train_fraction)
            dropped = splits.extra.get("dropped_classes") or {}
            if dropped:
                warnings.warn(
                    "left out (fewer than {} usable images, data.rare_classes=drop): {}".format(
                        splits.extra["images_needed"],
                        ", ".join(f"{c} ({n})" for c, n in dropped.items())), stacklevel=2)
        unknown = [c for c in d.offline_rotate if c not in splits.classes]
        if unknown:
            warnings.warn(f"offline_rotate lists {', '.join(unknown)}, not among the selected "
                          f"classes {', '.join(splits.classes)}; ignored", stacklevel=2)
        # Cache only the selected classes: what the splits need, nothing more.
        selected = [usable[p] for p, _ in splits.train + splits.val + splits.test]
        self.cache = build_cache(self.root, selected, self.image_size, d.resize,
                                 workers=self.cache_workers, progress=self.progress)
        self.entries = entries
        self.splits = splits
        self.manifest_hash = manifest_hash(entries)

    def _require_setup(self) -> tuple[Splits, ImageCache | NormalizedImages]:
        if self.splits is None or self.cache is None:
            self._prepare()
        if self.stain is None:
            return self.splits, self.cache
        if self._normalized is None or self._normalized.images is not self.cache:
            self._normalized = NormalizedImages(self.cache, self.stain)
        return self.splits, self._normalized

    def train_images(self, limit: int | None = REFERENCE_IMAGES) -> np.ndarray:
        """Up to ``limit`` evenly spaced images of the training split (None: all), as the cache
        holds them (uint8 NHWC, not normalised). Only those are read: the full dataset's
        training split would not fit in memory at once."""
        splits, _ = self._require_setup()
        rows = np.sort(self.cache.rows([p for p, _ in splits.train]))
        if limit is not None:
            rows = rows[sample_index(len(rows), limit)]
        return np.asarray(self.cache.array[rows])

    def set_stain_norm(self, reference: dict[str, Any] | None) -> None:
        """Normalise every image served from now on to ``reference`` (None: none)."""
        self.stain = StainNormalizer(reference) if reference else None
        self._normalized = None

    def _batches_done(self) -> int:
        """Training batches of the unfinished epoch already done (for ResumableLoader)."""
        trainer = self.trainer
        if trainer is None:
            return 0
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return done if done < trainer.num_training_batches else 0

    def _loader(self, dataset: CellDataset, shuffle: bool,
                order: Sequence[int] | None = None) -> DataLoader:
        kind, extra = (ResumableLoader, {"position": self._batches_done}) if shuffle else (
            DataLoader, {})
        return kind(
            dataset, **extra,
            batch_size=self.batch_size,
            sampler=dataset.sampler() if shuffle else order,
            shuffle=False,
            drop_last=False,
            num_workers=self.cfg.data.num_workers,
            persistent_workers=self.cfg.data.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataset(self) -> CellDataset:
        """Training samples: offline 90° copies and random dihedral transforms as configured."""
        splits, cache = self._require_setup()
        d = self.cfg.data
        return CellDataset(cache, splits.train, splits.classes, d.offline_rotate,
                           d.augment, self.seed, self.extra, self.balanced)

    def eval_dataset(self, split: str) -> CellDataset:
        """Samples of ``split`` without any augmentation."""
        splits, cache = self._require_setup()
        return CellDataset(cache, splits.split(split), splits.classes)

    def train_dataloader(self) -> DataLoader:
        """Seeded, shuffled training batches."""
        return self._loader(self.train_dataset(), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in one fixed seeded order, never augmented.

        The whole split gives the same figures in any order; the fixed shuffle makes a partial
        validation (``trainer.limit_val_batches``) a sample of every class, not the first
        classes' files.
        """
        dataset = self.eval_dataset("val")
        order = np.random.default_rng([self.seed, 2]).permutation(len(dataset)).tolist()
        return self._loader(dataset, shuffle=False, order=order)

    def test_dataloader(self) -> DataLoader:
        """Test batches in file order, never augmented."""
        return self._loader(self.eval_dataset("test"), shuffle=False)
