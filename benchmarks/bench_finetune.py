"""Training throughput of the fine-tune (configs/finetune.yaml): img/s and share of the peak.

Run by hand (never inside tests), from the repository root:
    python benchmarks/bench_finetune.py                  # 128 px, batch 32, every variant
    python benchmarks/bench_finetune.py --quick          # a smoke run: 64 px, 2 steps, no compile
    python benchmarks/bench_finetune.py --variants cl-bf16 cl-bf16-compile --steps 10

The model is configs/finetune.yaml's: timm MobileNetV2 1.0 with its input normalisation,
8 classes, in train mode; a step is forward + backward + AdamW with label smoothing, as the
trainer does. MobileNetV2 is mostly depthwise convolutions, which do few FLOPs per byte moved,
so its share of the matmul peak is far below a dense network's; the variants say which memory
layout, precision and compilation help on this machine:

    nchw-fp32, nchw-bf16     channels-first (PyTorch's default layout)
    cl-fp32, cl-bf16         channels-last, as the LightningModule trains
    cl-bf16-compile          channels-last bf16 under torch.compile (the first steps compile)

FLOPs per step are 3 x the forward's, counted with torch.utils.flop_counter (convolutions and
matmuls; see ``bench_variant`` for why the backward is not counted directly); the peak is a
square matmul in the same precision, measured in the same process (benchmarks/bench_train.py's
``matmul_peak``). Where the CPU has no native bf16 (no AVX-512 BF16 / AMX), bf16 is emulated
and both its peak and its steps are slow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
import torch.nn.functional as F
from bench_train import matmul_peak
from torch.utils.flop_counter import FlopCounterMode

from hemacnn.models import build_model

MODEL = "timm/mobilenetv2_100"
NORMALIZE = {"input_mean": [0.5, 0.5, 0.5], "input_std": [0.5, 0.5, 0.5]}
VARIANTS = {
    # name: (channels_last, precision, compile)
    "nchw-fp32": (False, "32", False),
    "nchw-bf16": (False, "bf16", False),
    "cl-fp32": (True, "32", False),
    "cl-bf16": (True, "bf16", False),
    "cl-bf16-compile": (True, "bf16", True),
}


def _autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bench_variant(name: str, size: int, batch: int, steps: int, classes: int = 8,
                  model_name: str = MODEL) -> dict:
    """Time ``steps`` training steps of one variant after two warm-up (or compiling) steps."""
    channels_last, precision, compiled = VARIANTS[name]
    torch.manual_seed(0)
    model = build_model(model_name, classes, size, **NORMALIZE)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=layout)
    y = torch.randint(0, classes, (batch,))
    forward = torch.compile(model) if compiled else model

    def step(net) -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(precision):
            loss = F.cross_entropy(net(x).float(), y, label_smoothing=0.1)
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), _autocast(precision):
        model(x)
    # Training = 3 x the forward (the backward computes input and weight gradients, each
    # about one forward). Counting the backward itself would be wrong here: the counter's
    # convolution_backward formula ignores groups, which multiplies a depthwise layer's
    # backward by its channel count (measured: 65x for a 64-channel 3x3 depthwise conv).
    flops = 3 * counter.get_total_flops()
    t0 = time.perf_counter()
    step(forward)
    step(forward)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step(forward)
    dt = time.perf_counter() - t0
    return {"variant": name, "model": model_name, "input": size, "batch": batch,
            "precision": precision, "channels_last": channels_last, "compile": compiled,
            "steps": steps,
            "warmup_s": warmup_s, "img_per_s": steps * batch / dt,
            "gflop_per_step": flops / 1e9, "gflop_per_s": flops * steps / dt / 1e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--model", default=MODEL,
                   help=f"a registered or timm/ model name (default {MODEL}; the lite models: "
                        "timm/tf_efficientnet_lite0, -lite1, -lite2)")
    p.add_argument("--size", type=int, default=128, help="input px (finetune.yaml: 128)")
    p.add_argument("--batch", type=int, default=32, help="batch size (finetune.yaml: 32)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 64 px, batch 8, 2 steps, no torch.compile, short peaks")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    variants, peak_s = args.variants, 3.0
    if args.quick:
        args.size, args.batch, args.steps, peak_s = 64, 8, 2, 0.5
        variants = [v for v in variants if not VARIANTS[v][2]]
    peaks = {"32": matmul_peak(torch.float32, seconds=peak_s),
             "bf16": matmul_peak(torch.bfloat16, seconds=peak_s)}
    rows = []
    for name in variants:
        try:
            r = bench_variant(name, args.size, args.batch, args.steps, model_name=args.model)
        except Exception as exc:  # noqa: BLE001 - e.g. torch.compile without a C++ compiler
            rows.append({"variant": name, "error": str(exc).strip().splitlines()[0][:120]})
            continue
        r["fraction_of_peak"] = r["gflop_per_s"] / peaks[r["precision"]]
        rows.append(r)
    if args.json:
        print(json.dumps({"model": args.model, "threads": torch.get_num_threads(),
                          "peak_gflop_per_s": peaks, "variants": rows}, indent=2))
        return
    print(f"{args.model} at {args.size} px, batch {args.batch}; threads {torch.get_num_threads()}; "
          f"matmul peak fp32 {peaks['32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s")
    print(f"{'variant':<17}{'img/s':>9}{'GFLOP/step':>12}{'GFLOP/s':>10}{'of peak':>9}"
          f"{'warm-up s':>11}")
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<17}failed: {r['error']}")
            continue
        print(f"{r['variant']:<17}{r['img_per_s']:>9.1f}{r['gflop_per_step']:>12.2f}"
              f"{r['gflop_per_s']:>10.1f}{r['fraction_of_peak']:>9.1%}{r['warmup_s']:>11.1f}")


if __name__ == "__main__":
    main()
