"""Training steps with and without PyTorch's huge-page CPU allocation (THP_MEM_ALLOC_ENABLE).

Run by hand (never inside tests):
    python benchmarks/bench_alloc.py                  # every case, 1 thread
    python benchmarks/bench_alloc.py --cases mv1-opt --threads 2

The ``hemacnn`` command sets THP_MEM_ALLOC_ENABLE=1 unless the user has set it (cli.main).
Without it, PyTorch's CPU allocator returns every tensor of 2 MiB or more to the kernel when it
is freed, and the next step faults the memory in again 4 KiB at a time: system time, not
arithmetic. Each case runs in a fresh process per setting (PyTorch reads the variable once),
times optimizer steps (forward + backward + Adadelta, channels-last as the trainer) on a random
batch of 32, and reports the median step, user and system CPU time per step, minor page faults
per step, and whether the two settings computed the same loss to the last bit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CASES = {
    # name: (model, width, input size): the studies' cpu profiles
    "mv1-opt": ("mv1", 0.25, 134),  # optimizers study
    "mv3-arch": ("mv3", 0.125, 48),  # architectures / lr_noise / regularization
    "quick": ("mv3", 0.25, 64),  # configs/quick.yaml
}

CHILD = r"""
import json, resource, statistics, sys, time
import torch
from hemacnn.models import build_model
name, width, size, steps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
model = build_model(name, num_classes=4, input_size=size, width=width)
model = model.to(memory_format=torch.channels_last)  # as the trainer runs it
opt = torch.optim.Adadelta(model.parameters(), lr=0.1, rho=0.9, eps=1e-7)
x = torch.rand(32, 3, size, size).to(memory_format=torch.channels_last)
y = torch.randint(0, 4, (32,))
def step():
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()
for _ in range(2):
    step()
times, r0 = [], resource.getrusage(resource.RUSAGE_SELF)
for _ in range(steps):
    t0 = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - t0)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"ms": 1000 * statistics.median(times),
                  "user_ms": 1000 * (r1.ru_utime - r0.ru_utime) / steps,
                  "sys_ms": 1000 * (r1.ru_stime - r0.ru_stime) / steps,
                  "faults": (r1.ru_minflt - r0.ru_minflt) / steps, "loss": loss.hex()}))
"""


def run_case(case: str, thp: str, threads: int, steps: int) -> dict:
    name, width, size = CASES[case]
    env = os.environ | {"THP_MEM_ALLOC_ENABLE": thp, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(width), str(size), str(steps)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"{args.threads} thread(s), {args.steps} steps of batch 32 per case and setting")
    print("| case | THP | ms/step (median) | user ms | system ms | minor faults | speed-up | "
          "same loss |")
    print("|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        off = run_case(case, "0", args.threads, args.steps)
        on = run_case(case, "1", args.threads, args.steps)
        for label, r in (("0", off), ("1", on)):
            speed = f"{off['ms'] / r['ms']:.2f}x" if label == "1" else ""
            same = str(on["loss"] == off["loss"]) if label == "1" else ""
            print(f"| {case} | {label} | {r['ms']:.0f} | {r['user_ms']:.0f} | {r['sys_ms']:.0f} "
                  f"| {r['faults']:.0f} | {speed} | {same} |")


if __name__ == "__main__":
    main()
