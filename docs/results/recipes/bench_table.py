"""The backbone training-throughput table of docs/benchmarks.md, from bench_finetune.py's JSON.

    python docs/results/recipes/bench_table.py docs/results/recipes/bench_backbones_zen4.json

Epoch seconds are derived, not measured: the 8-class split's 1,756 training images divided by
the step throughput (the real epoch adds validation, augmentation and the loader).
"""

from __future__ import annotations

import json
import sys

TRAIN_IMAGES = 1756  # the sample's 8-class training split (seed 0)


def main(path: str) -> None:
    doc = json.load(open(path, encoding="utf-8"))
    print(f"{doc['cpu']}; {doc['date']}; `{doc['command']}`"
          + (f"; {doc['note_compile']}" if doc.get("note_compile") else "") + "\n")
    print("| backbone | px | precision | img/s | GFLOP/step (batch 32) | GFLOP/s | of peak "
          "(same run) | training s per epoch (derived) |")
    print("|---|---|---|---|---|---|---|---|")
    for run in doc["runs"]:
        peaks = run["peak_gflop_per_s"]
        for v in run["variants"]:
            if "error" in v:
                print(f"| {run['model']} | | {v['variant']} | failed: {v['error']} | | | | |")
                continue
            prec = "bf16 autocast" if v["precision"] == "bf16" else "fp32"
            prec += ", torch.compile" if v.get("compile") else ""
            print(f"| {run['model'].removeprefix('timm/')} | {v['input']} | {prec} | "
                  f"{v['img_per_s']:.1f} | {v['gflop_per_step']:.1f} | {v['gflop_per_s']:.0f} | "
                  f"{v['fraction_of_peak']:.0%} of {peaks[v['precision']]:.0f} | "
                  f"{TRAIN_IMAGES / v['img_per_s']:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1])
