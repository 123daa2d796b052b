"""Training throughput: img/s and achieved GFLOP/s as a fraction of this machine's matmul peak.

Run by hand (never inside tests):
    python benchmarks/bench_train.py                 # quick.yaml's model + full MV3 at 128 px
    python benchmarks/bench_train.py --cases quick   # one case

Each case times optimizer steps (forward + backward + Adam) on random batches of 32 (as
configs/fast.yaml too), with the
same autocast the Trainer uses for its precision setting. FLOPs per step are counted with
torch.utils.flop_counter (convolutions and matmuls, forward and backward); the peak is a large
square matmul measured in the same process, in fp32 and bf16.

FLOPs are nominal (direct convolution). oneDNN may run fp32 3x3 convolutions with Winograd,
which does fewer multiplications than that, so fp32 can show more than 100% of the matmul peak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from hemacnn.models import build_model

CASES = {
    # name: (model, width, input size, precision)
    "quick": ("mv3", 0.25, 64, "bf16"),
    "quick-fp32": ("mv3", 0.25, 64, "32"),
    "mv3-128-bf16": ("mv3", 1.0, 128, "bf16"),
    "mv3-128-fp32": ("mv3", 1.0, 128, "32"),
    "fast": ("timm/regnety_004", 1.0, 128, "bf16"),  # configs/fast.yaml's model
    "fast-fp32": ("timm/regnety_004", 1.0, 128, "32"),
    "resnet18-96": ("timm/resnet18", 1.0, 96, "bf16"),  # fast.yaml's model before
}


def matmul_peak(dtype: torch.dtype, n: int = 1024, seconds: float = 3.0) -> float:
    """GFLOP/s of repeated n x n matmuls on all threads (1024 was the fastest size here)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e9


def _autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bench_case(name: str, steps: int, batch: int = 32) -> dict:
    """Time ``steps`` training steps of one case after two warm-up steps."""
    arch, width, size, precision = CASES[name]
    torch.manual_seed(0)
    opts = {"width": width, "noise_std": 1.0} if arch == "mv3" else {}  # zoo: no such options
    model = build_model(arch, 4, size, **opts)
    model = model.to(memory_format=torch.channels_last)  # as the LightningModule does
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(precision):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t0
    return {"case": name, "model": arch, "width": width, "input": size, "precision": precision,
            "batch": batch,
            "img_per_s": steps * batch / dt, "gflop_per_step": flops / 1e9,
            "gflop_per_s": flops * steps / dt / 1e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["quick", "quick-fp32", "mv3-128-bf16",
                                                     "mv3-128-fp32"], choices=sorted(CASES))
    p.add_argument("--steps", type=int, default=None, help="timed steps (default per case)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    peaks = {"32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    for name in args.cases:
        steps = args.steps or (20 if CASES[name][2] <= 64 else 3 if name.startswith("mv3")
                               else 8)
        r = bench_case(name, steps, batch=32)
        r["fraction_of_peak"] = r["gflop_per_s"] / peaks[r["precision"]]
        rows.append(r)
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "peak_gflop_per_s": peaks,
                          "cases": rows}, indent=2))
        return
    print(f"threads {torch.get_num_threads()}; matmul peak fp32 {peaks['32']:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s")
    print(f"{'case':<14}{'img/s':>9}{'GFLOP/step':>12}{'GFLOP/s':>10}{'of peak':>9}")
    for r in rows:
        print(f"{r['case']:<14}{r['img_per_s']:>9.1f}{r['gflop_per_step']:>12.1f}"
              f"{r['gflop_per_s']:>10.1f}{r['fraction_of_peak']:>9.0%}")


if __name__ == "__main__":
    main()
