"""Scan throughput (img/s) on the shared sample: full decode + hash + pixel check per file.

Run by hand, never inside the tests:

    python benchmarks/bench_scan.py [DATA_DIR] [--workers 1 2] [--repeats 3]

Prints img/s for scan_dataset with each worker count (best of the repeats, page cache warm),
then the per-image cost of the parts on one core: Pillow decode alone, and the pixel check.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hemacnn.data.corruption import detect_corruption
from hemacnn.data.scan import scan_dataset

DEFAULT = Path(__file__).resolve().parents[2] / "shared/data/bm_sample/BM_cytomorphology_data"


def main() -> None:
    """Measure and print scan throughput."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", nargs="?", default=str(DEFAULT))
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    print(f"cores available: {len(os.sched_getaffinity(0))}; load average "
          f"{os.getloadavg()[0]:.2f} (figures are indicative when the cores are shared)")
    scan_dataset(args.data_dir, workers=1, progress=False)  # warm the page cache
    for w in args.workers:
        best = 0.0
        for _ in range(args.repeats):
            t = time.perf_counter()
            result = scan_dataset(args.data_dir, workers=w, progress=False)
            best = max(best, result.total / (time.perf_counter() - t))
        print(f"scan_dataset, {w} worker(s): {best:,.0f} img/s over {result.total:,} images")

    files = sorted(Path(args.data_dir).rglob("*.jpg"))[:500]
    t = time.perf_counter()
    imgs = []
    for f in files:
        with Image.open(f) as im:
            im.load()
            imgs.append(im.copy())
    dt = time.perf_counter() - t
    print(f"Pillow open+decode alone, 1 core: {len(files) / dt:,.0f} img/s")
    grays = [np.asarray(im.convert("L")) for im in imgs]
    t = time.perf_counter()
    for g in grays:
        detect_corruption(g)
    per = (time.perf_counter() - t) / len(grays) * 1e3
    t = time.perf_counter()
    for im in imgs:
        detect_corruption(im)
    per_rgb = (time.perf_counter() - t) / len(imgs) * 1e3
    print(f"detect_corruption: {per:.3f} ms per image on grey levels, {per_rgb:.3f} ms from RGB")


if __name__ == "__main__":
    main()
