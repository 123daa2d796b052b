"""Choose the demo sample shipped in src/hemacnn/demo/data from the 2,440-image Matek sample.

A seeded random draw (not the smallest files, which would favour smooth, easy pictures) of
usable images per class, copied byte for byte. Run from the repository root:

    python tools/make_demo_sample.py ../shared/data/bm_sample/BM_cytomorphology_data
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from hemacnn.data.scan import scan_dataset

CLASSES = ("BLA", "LYT", "NGS")
PER_CLASS = 45
SEED = 7
OUT = Path(__file__).resolve().parents[1] / "src" / "hemacnn" / "demo" / "data"


def main(root: str) -> None:
    entries = scan_dataset(root, progress=False).entries
    for code in CLASSES:
        paths = sorted(e.path for e in entries if e.label == code and e.usable)
        rng = np.random.default_rng([SEED, sum(map(ord, code))])
        chosen = sorted(paths[i] for i in rng.choice(len(paths), PER_CLASS, replace=False))
        folder = OUT / code
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for rel in chosen:
            shutil.copyfile(Path(root) / rel, folder / Path(rel).name)
    total = sum(p.stat().st_size for p in OUT.rglob("*.jpg"))
    print(f"{len(CLASSES) * PER_CLASS} images, {total / 1e6:.2f} MB in {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
