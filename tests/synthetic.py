"""Synthetic labelled folders for mechanics tests (never for accuracy claims)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"LYT": (200, 60, 60), "neutrophil": (60, 180, 60), "platelet": (60, 60, 200)}


def make_folder(root: Path, counts: dict[str, int], size: int = 48) -> Path:
    """Class folders of small JPEGs told apart by colour."""
    rng = np.random.default_rng(0)
    for code, n in counts.items():
        (root / code).mkdir(parents=True)
        base = COLOURS.get(code, tuple(int(v) for v in rng.integers(30, 220, 3)))
        for i in range(n):
            img = rng.normal(base, 30, size=(size, size, 3)).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / code / f"{code}_{i:03d}.jpg", quality=90)
    return root
