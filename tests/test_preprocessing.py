"""Preprocessing on synthetic images whose every pixel is known, so a fresh clone without the
real sample still checks nearest-neighbour resizing and the /255 scaling against formulas
(not against ``preprocess_image`` itself)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hemacnn.config import build_config
from hemacnn.data.datamodule import HemaDataModule
from hemacnn.data.images import preprocess_image


def _coordinate_image(path: Path, w: int = 250, h: int = 250) -> Path:
    """A lossless RGB image whose red channel is the column and green the row of each pixel."""
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx, yy, np.full_like(xx, 77)], axis=2).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize(("src", "size"), [(250, 64), (250, 128), (100, 48), (48, 96)])
def test_nearest_takes_the_source_pixel_under_each_output_centre(tmp_path, src, size):
    f = _coordinate_image(tmp_path / "coords.png", src, src)
    out = preprocess_image(f, size, "nearest")
    # Output pixel k covers [k, k+1) * src/size; nearest sampling takes the pixel under its
    # centre. No blending: every value is a source value.
    expect = np.floor((np.arange(size) + 0.5) * src / size).astype(int)
    assert out.dtype == np.uint8 and out.shape == (size, size, 3)
    assert np.array_equal(out[0, :, 0], expect)  # columns
    assert np.array_equal(out[:, 0, 1], expect)  # rows
    assert np.all(out[..., 2] == 77)


def test_non_square_source_is_resized_per_axis(tmp_path):
    f = _coordinate_image(tmp_path / "wide.png", 200, 100)
    out = preprocess_image(f, 50, "nearest")
    assert np.array_equal(out[0, :, 0], np.floor((np.arange(50) + 0.5) * 4).astype(int))
    assert np.array_equal(out[:, 0, 1], np.floor((np.arange(50) + 0.5) * 2).astype(int))


def test_batches_are_pixel_values_divided_by_255(tmp_path):
    root = tmp_path / "data"
    levels = {"AAA": 0, "BBB": 51, "CCC": 255}
    rng = np.random.default_rng(0)
    for code, level in levels.items():
        (root / code).mkdir(parents=True)
        for i in range(4):
            arr = np.full((16, 16, 3), level, np.uint8)
            arr[0, 0] = rng.integers(0, 256, 3)  # one known odd pixel per image
            Image.fromarray(arr).save(root / code / f"{code}_{i}.png")
    cfg = build_config({"data": {"root": str(root), "classes": list(levels), "image_size": 16,
                                 "batch_size": 64}})
    dm = HemaDataModule(cfg, progress=False)
    dm.setup()
    x, y = next(iter(dm.test_dataloader()))
    assert x.dtype == torch.float32 and len(x) == len(dm.splits.test)
    for img, (path, _) in zip(x, dm.splits.test, strict=True):  # test batches: file order
        raw = np.asarray(Image.open(root / path).convert("RGB"), np.float32).transpose(2, 0, 1)
        assert torch.equal(img, torch.from_numpy(raw) / 255.0), path
    assert float(x.max()) == 1.0 and float(x.min()) == 0.0  # 255 -> 1 and 0 -> 0 exactly
