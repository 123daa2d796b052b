"""Synthetic labelled folders for mechanics tests (never for accuracy claims)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import yaml
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


def write_config(path: Path, cfg: dict, sections: dict | None = None) -> Path:
    """Write ``cfg`` as YAML with each of ``sections`` merged into its section; return path."""
    for key, value in (sections or {}).items():
        cfg.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_metrics(run: Path) -> list[dict[str, str]]:
    """A run's metrics.csv, one dict per epoch."""
    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))
