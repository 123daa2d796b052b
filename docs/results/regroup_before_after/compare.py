"""Compare the before/after runs of run.sh: weights, metrics.csv, test metrics, predict output."""

import csv
import hashlib
import json
import sys
from pathlib import Path

import torch

base = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ba")


def weights(side: str) -> str:
    sd = torch.load(base / side / "run/checkpoints/best.ckpt", map_location="cpu",
                    weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].numpy().tobytes())
    return h.hexdigest()[:16]


def rows(path: Path, drop: tuple[str, ...] = ()) -> list[dict]:
    with path.open(newline="") as fh:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(fh)]


a, b = (json.loads((base / s / "run/test_metrics.json").read_text()) for s in ("before", "after"))
shared = sorted(set(a) & set(b) - {"checkpoint", "data"})
print("best.ckpt weights sha256[:16]:", weights("before"), weights("after"))
print("metrics.csv equal (time columns aside):",
      rows(base / "before/run/metrics.csv", ("time_s",)) ==
      rows(base / "after/run/metrics.csv", ("time_s",)))
print("test_metrics.json: keys only after:", sorted(set(b) - set(a)),
      "| only before:", sorted(set(a) - set(b)))
print("test_metrics.json: shared keys equal:", all(a[k] == b[k] for k in shared),
      [k for k in shared if a[k] != b[k]])
before = rows(base / "before/pred.csv")
after = rows(base / "after/pred.csv")
print("predict --precision fp32 CSV: columns only after:",
      [c for c in after[0] if c not in before[0]])
print("predict rows equal in the columns both have:",
      all({k: r[k] for k in r} == {k: s[k] for k in r} for r, s in zip(before, after, strict=True)),
      f"({len(before)} rows)")
