"""Cache build throughput (img/s) at 64 and 128 px, with and without JPEG draft mode.

Usage:
    python benchmarks/bench_cache.py [DATA_ROOT] [--workers 2] [--limit N]

Each configuration builds a fresh cache in a temporary HEMACNN_CACHE folder (decode + resize +
write into the memory map, in worker processes) over the sample's images, and also reports the
mean absolute pixel difference of draft mode against the full decode. Run by hand; figures on
a shared machine are indicative.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "bm_sample" / "BM_cytomorphology_data"


def listing(root: Path, limit: int | None):
    from hemacnn.data.manifest import Entry

    files = sorted(root.rglob("*.jpg"))[:limit]
    return [Entry(p.relative_to(root).as_posix(), p.relative_to(root).parts[0],
                  hashlib.sha1(p.relative_to(root).as_posix().encode()).hexdigest(), 250, 250,
                  "ok") for p in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(DEFAULT_ROOT))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    args = ap.parse_args()
    root = Path(args.root)
    tmp = tempfile.mkdtemp(prefix="bench-cache-")
    os.environ["HEMACNN_CACHE"] = tmp
    from hemacnn.data.cache import build_cache

    entries = listing(root, args.limit)
    for e in entries:  # warm the OS file cache so the first row does not pay for disk reads
        (root / e.path).read_bytes()
    print(f"{len(entries)} images from {root}, {args.workers} worker process(es), "
          f"{os.cpu_count()} cores visible")
    print(f"{'size':>4} {'method':>8} {'draft':>5} {'img/s':>7} {'mean|diff| vs full':>19}")
    try:
        for size in (64, 128):
            for method in ("nearest", "area", "bilinear"):
                arrays = {}
                for draft in (False, True):
                    t = time.perf_counter()
                    c = build_cache(root, entries, size, method, workers=args.workers,
                                    progress=False, draft=draft)
                    dt = time.perf_counter() - t
                    arrays[draft] = np.asarray(c.array, dtype=np.int16)
                    diff = (np.abs(arrays[True] - arrays[False]).mean() if draft else 0.0)
                    print(f"{size:>4} {method:>8} {str(draft):>5} {len(entries) / dt:>7.0f} "
                          f"{diff:>19.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
