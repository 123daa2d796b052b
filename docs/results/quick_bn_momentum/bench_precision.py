"""CPU seconds per training step of quick.yaml's model (MV3, quarter width, 64 px, batch 32),
fp32 against bf16 autocast, one thread:

    OMP_NUM_THREADS=1 python docs/results/quick_bn_momentum/bench_precision.py

process_time, not wall time, so other processes on a shared machine inflate it little.
"""

import time

import torch
import torch.nn.functional as F

from hemacnn.models import build_model

torch.set_num_threads(1)
m = build_model("mv3", 3, 64, width=0.25).to(memory_format=torch.channels_last)
opt = torch.optim.Adam(m.parameters())
x = torch.rand(32, 3, 64, 64).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 3, (32,))
for prec in ("fp32", "bf16"):
    for i in range(4):
        if i == 1:  # the first step warms up (kernel selection)
            t = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
            loss = F.cross_entropy(m(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(prec, "CPU s per step", round((time.process_time() - t) / 3, 2), flush=True)
