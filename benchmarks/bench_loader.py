"""Training loader throughput (img/s): iterate the train DataLoader over the sample.

Usage:
    python benchmarks/bench_loader.py [DATA_ROOT] [--epochs 3] [--classes BLA,LYT,NGS,...]

For 64 and 128 px, with 0 and 2 worker processes, with and without random dihedral
augmentation, it times full passes over the training split (after one warm-up pass, so
worker start-up and the first page-in of the memory map are not counted). The scan and the
cache are built once first, in a temporary HEMACNN_CACHE folder. Run by hand; figures on a
shared machine are indicative. The loader should run at >= 10x the training speed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "bm_sample" / "BM_cytomorphology_data"
SAMPLE_CLASSES = "ART,BLA,EOS,LYT,MON,NGS,NIF,PMO"  # every sample class with enough images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(DEFAULT_ROOT))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--classes", default=SAMPLE_CLASSES)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-loader-")
    os.environ["HEMACNN_CACHE"] = tmp
    from hemacnn.config import build_config
    from hemacnn.data.datamodule import HemaDataModule

    classes = args.classes.split(",")
    print(f"{'size':>4} {'workers':>7} {'augment':>7} {'train imgs':>10} {'img/s':>8}")
    try:
        for size in (64, 128):
            for workers in (0, 2):
                for augment in (False, True):
                    cfg = build_config({"data": {
                        "root": args.root, "classes": classes, "image_size": size,
                        "batch_size": args.batch_size, "num_workers": workers,
                        "augment": augment}})
                    dm = HemaDataModule(cfg, progress=False)
                    dm.setup()
                    loader = dm.train_dataloader()
                    for _ in loader:  # warm-up: workers start, memory map paged in
                        pass
                    n = 0
                    t = time.perf_counter()
                    for _ in range(args.epochs):
                        for x, _y in loader:
                            n += x.shape[0]
                    dt = time.perf_counter() - t
                    print(f"{size:>4} {workers:>7} {str(augment):>7} "
                          f"{len(loader.dataset):>10} {n / dt:>8.0f}")
                    del loader
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
