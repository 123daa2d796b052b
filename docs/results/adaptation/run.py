"""The learning curve of `hemacnn adapt`: a parent run adapted to k labelled PBC cells per class.

For each seed (a draw of the k cells) and each k, the k cells of each PBC class that the class
map gives a model class (eosinophil, ig, lymphocyte, monocyte, neutrophil) are linked into a
labels folder; the class's other cells are the held-back set. Then, through the real commands:

    hemacnn adapt PARENT --labels LABELS --class-map matek-pbc --out RUN --seed SEED [OPTIONS]
    hemacnn evaluate RUN --data HELD --class-map matek-pbc --json     (the other lab)
    hemacnn evaluate RUN --json                  (the parent's own test split: forgetting)

One view per image throughout (no --tta: eight views cost 8x the scoring time, which this
2-core machine, shared with two other experiments, did not have); the parent's figures too.

k = 0 is the parent itself on every cell, plain and with --adapt-bn. Each point writes one JSON
(commands, wall times, the figures) into OUT/points/; nothing else is kept but the small files.

Usage (from the repository root, one thread):
    OMP_NUM_THREADS=1 python docs/results/adaptation/run.py PARENT OUT [--ks 5,10,25,50]
        [--seeds 0,1,2] [--name NAME] [--adapt "OPTIONS"]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MAPPED = ("eosinophil", "ig", "lymphocyte", "monocyte", "neutrophil")
MAP = "matek-pbc"


def hemacnn(*args: str) -> tuple[dict | None, float, str]:
    """Run `hemacnn ARGS`; (its JSON output when --json, wall seconds, its output)."""
    cmd = [sys.executable, "-m", "hemacnn.cli", *args]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): hemacnn {' '.join(args)}\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    out = done.stdout
    return (json.loads(out) if "--json" in args else None), wall, out + done.stderr


def draw(pbc: Path, k: int, seed: int, folder: Path) -> tuple[Path, Path, dict]:
    """labels/ (k cells per mapped class) and held/ (the class's other cells), as symlinks."""
    rng = np.random.default_rng([seed, k])
    labels, held = folder / "labels", folder / "held"
    picked = {}
    for cls in MAPPED:
        files = sorted(p for p in (pbc / cls).iterdir() if p.is_file())
        order = rng.permutation(len(files))
        chosen = {files[i].name for i in order[:k]}
        picked[cls] = sorted(chosen)
        for f in files:
            dest = (labels if f.name in chosen else held) / cls / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(f.resolve())
    return labels, held, picked


def figures(ev: dict) -> dict:
    """The figures a point keeps of an evaluation."""
    keep = {"n": ev["n"], "macro_f1": ev["macro_f1"], "accuracy": ev["accuracy"],
            "balanced_accuracy": ev["balanced_accuracy"],
            "macro_f1_ci": (ev.get("headline_ci") or {}).get("macro_f1"),
            "f1": {c: v["f1"] for c, v in ev["per_class"].items()},
            "inference": ev.get("inference"), "tta": ev.get("tta")}
    return keep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("parent")
    p.add_argument("out")
    p.add_argument("--pbc", default="../shared/data/pbc_dev")
    p.add_argument("--ks", default="0,5,10,25,50")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--name", default="curve", help="a name for these points (the options)")
    p.add_argument("--adapt", default="", help="options for hemacnn adapt, one string")
    args = p.parse_args()
    args.adapt_options = shlex.split(args.adapt)
    out, pbc, parent = Path(args.out), Path(args.pbc), Path(args.parent)
    (out / "points").mkdir(parents=True, exist_ok=True)
    conditions = {"cpu": platform.processor() or platform.machine(),
                  "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                  "python": platform.python_version()}
    for k in [int(v) for v in args.ks.split(",")]:
        for seed in [int(v) for v in args.seeds.split(",")]:
            name = f"{args.name}_k{k}_s{seed}"
            dest = out / "points" / f"{name}.json"
            if dest.is_file():
                continue
            if k == 0 and seed != int(args.seeds.split(",")[0]):
                continue  # the parent alone: no draw, one point
            folder = out / "work" / name
            shutil.rmtree(folder, ignore_errors=True)
            labels, held, picked = draw(pbc, k, seed, folder)
            point = {"name": name, "k": k, "seed": seed, "options": args.adapt_options,
                     "parent": str(parent), "labels": picked, "conditions": conditions,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "load_before": os.getloadavg()}
            if k == 0:
                for variant, extra in (("plain", []), ("adaptbn", ["--adapt-bn"])):
                    cmd = ["evaluate", str(parent), "--data", str(held), "--class-map", MAP,
                           "--json", "--out", str(folder / variant), *extra]
                    ev, wall, _ = hemacnn(*cmd)
                    point[variant] = {"command": "hemacnn " + " ".join(cmd), "wall_s": wall,
                                      "pbc": figures(ev)}
                cmd = ["evaluate", str(parent), "--json", "--out", str(folder / "in")]
                ev, wall, _ = hemacnn(*cmd)
                point["in_domain"] = {"command": "hemacnn " + " ".join(cmd), "wall_s": wall,
                                      **figures(ev)}
            else:
                run = folder / "run"
                cmd = ["adapt", str(parent), "--labels", str(labels), "--class-map", MAP,
                       "--out", str(run), "--seed", str(seed), "--no-progress",
                       *args.adapt_options]
                _, wall, text = hemacnn(*cmd)
                env = json.loads((run / "env.json").read_text())
                card = json.loads((run / "model_card.json").read_text())
                point["adapt"] = {"command": "hemacnn " + " ".join(cmd), "wall_s": wall,
                                  "train_s": env["adapt_seconds"], "output": text[-3000:],
                                  "adaptation": {k2: v for k2, v in card["adaptation"].items()
                                                 if k2 != "parent_colour_stats"}}
                cmd = ["evaluate", str(run), "--data", str(held), "--class-map", MAP,
                       "--json"]
                ev, wall, _ = hemacnn(*cmd)
                point["pbc"] = {"command": "hemacnn " + " ".join(cmd), "wall_s": wall,
                                **figures(ev)}
                cmd = ["evaluate", str(run), "--json"]
                ev, wall, _ = hemacnn(*cmd)
                point["in_domain"] = {"command": "hemacnn " + " ".join(cmd), "wall_s": wall,
                                      **figures(ev)}
            point["load_after"] = os.getloadavg()
            dest.write_text(json.dumps(point, indent=1) + "\n")
            shutil.rmtree(folder / "run" / "checkpoints", ignore_errors=True)  # 9 MB each
            print(f"{name}: in-domain {point['in_domain']['macro_f1']:.3f}, PBC "
                  f"{(point.get('pbc') or point.get('plain', {}).get('pbc'))['macro_f1']:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
