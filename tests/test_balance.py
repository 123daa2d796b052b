"""Class imbalance on the data side (issue 8): the OTHER class, the balanced sampler, weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hemacnn.config import build_config
from hemacnn.data.balance import BalancedSampler, inverse_frequency_weights, pool_other
from hemacnn.data.datamodule import HemaDataModule
from hemacnn.data.manifest import Entry
from hemacnn.errors import HemacnnError


def _entries(counts: dict[str, int]) -> list[Entry]:
    return [Entry(f"{c}/{c}_{i}.jpg", c, f"{c}{i}", 8, 8, "ok")
            for c, n in counts.items() for i in range(n)]


def test_pool_other_relabels_unselected_classes() -> None:
    entries = _entries({"BLA": 3, "LYT": 3, "EOS": 2, "MON": 4})
    pooled, classes = pool_other(entries, ["BLA", "LYT"], True)
    assert classes == ["BLA", "LYT", "OTHER"]
    assert Counter(e.label for e in pooled) == {"BLA": 3, "LYT": 3, "OTHER": 6}
    assert [e.path for e in pooled] == [e.path for e in entries]  # files unchanged
    only, _ = pool_other(entries, ["BLA", "LYT"], ["MON"])  # EOS stays out (unseen)
    assert Counter(e.label for e in only) == {"BLA": 3, "LYT": 3, "OTHER": 4, "EOS": 2}
    with pytest.raises(HemacnnError, match="nothing to pool"):
        pool_other(_entries({"BLA": 3, "LYT": 3}), ["BLA", "LYT"], True)
    with pytest.raises(HemacnnError, match="imbalance.other names PMO"):
        pool_other(entries, ["BLA", "LYT"], ["PMO"])


def test_other_listing_a_selected_class_is_a_config_error() -> None:
    with pytest.raises(HemacnnError, match="imbalance.other lists"):
        build_config({"data": {"classes": ["BLA", "LYT"]}, "imbalance": {"other": ["BLA"]}})
    with pytest.raises(HemacnnError, match="per_class needs"):
        build_config({"imbalance": {"per_class": 10}})


def test_balanced_sampler_draws_the_budget_per_class() -> None:
    labels = np.array([0] * 50 + [1] * 5 + [2] * 12)
    sampler = BalancedSampler(labels, per_class=10, seed=3)
    draw = list(sampler)
    assert len(draw) == len(sampler) == 30
    assert Counter(labels[draw].tolist()) == {0: 10, 1: 10, 2: 10}
    small = [i for i in draw if labels[i] == 1]
    assert Counter(small).most_common(1)[0][1] == 2  # 5 images, 10 draws: each twice
    big = [i for i in draw if labels[i] == 0]
    assert len(set(big)) == 10  # enough images: no repeats
    assert list(sampler) != draw  # the next epoch draws again
    again = BalancedSampler(labels, per_class=10, seed=3)
    assert list(again) == draw  # seeded by (seed, epoch)
    paired = list(BalancedSampler(labels, seed=3, augment=True))
    assert len(paired) == 150 and all(0 <= k < 8 for _, k in paired)  # default: largest class


def test_inverse_frequency_weights() -> None:
    w = inverse_frequency_weights(np.array([0, 0, 0, 1]), 2)
    assert w.tolist() == pytest.approx([4 / 6, 4 / 2])
    with pytest.raises(HemacnnError, match="no training images"):
        inverse_frequency_weights(np.array([0, 0]), 2)


def test_datamodule_with_other_class_and_balanced_sampler(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for code, n in {"BLA": 10, "LYT": 10, "EOS": 6, "MON": 6}.items():
        (tmp_path / code).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                tmp_path / code / f"{code}_{i}.png")
    cfg = build_config({"data": {"root": str(tmp_path), "classes": ["BLA", "LYT"],
                                 "image_size": 16, "batch_size": 4},
                        "imbalance": {"other": True, "sampler": "balanced", "per_class": 7}})
    dm = HemaDataModule(cfg, progress=False, cache_workers=1)
    dm.setup("fit")
    assert dm.class_codes == ["BLA", "LYT", "OTHER"]
    others = [p for p, c in dm.splits.train + dm.splits.val + dm.splits.test if c == "OTHER"]
    assert len(others) == 12 and {p.split("/")[0] for p in others} == {"EOS", "MON"}
    train = dm.train_dataset()
    labels = train.labels()
    drawn = Counter(labels[i] for i in train.sampler())
    assert drawn == {0: 7, 1: 7, 2: 7}
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape[1:] == (3, 16, 16)
