"""Build the recipe table (README.md here) from finished run folders; no figure typed by hand.

    python docs/results/recipes/collect.py RUN_DIR ... [--no-json] [--epoch-base 0] > table.md

metrics.csv counts epochs from 1; run folders written before it did (those of the committed
tables) count from 0 and need ``--epoch-base 0`` so that ``best_epoch`` is counted from 1. The
file does not say which, so the caller does.

Per run: the command (env.json), model, input size and the recipe switches that differ from
the paper's (config.yaml), validation macro-F1 at the selected checkpoint's epoch (lowest
validation loss; per-class precision/recall from metrics.csv), test macro-F1 with its
bootstrap-free Wilson-based per-class intervals left to `hemacnn evaluate`, training minutes
(sum of the epochs' time_s) and, when the launcher wrote RUN_DIR.log beside the folder, the
whole command's wall time, its CPU time (from /usr/bin/time -v) and the load average at its
start (the machine was shared).
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import sys
from pathlib import Path

import yaml

PAPER = {  # the paper's recipe: what a row's "changes" column is measured against
    "data.augment": False, "optimizer.name": "adam", "optimizer.weight_decay": 0.0,
    "recipe.schedule": "none", "recipe.label_smoothing": 0.0, "recipe.ema_decay": None,
    "recipe.mixup_alpha": 0.0, "recipe.cutmix_alpha": 0.0, "recipe.stain_jitter": 0.0,
    "recipe.crop_scale": None, "recipe.grad_clip": None, "recipe.freeze_backbone_epochs": 0,
    "imbalance.sampler": "shuffle", "imbalance.class_weights": False,
    "imbalance.focal_gamma": 0.0, "imbalance.other": False, "data.batch_size": 32,
    "recipe.test_tta": False, "recipe.progressive": None, "data.train_fraction": 1.0,
    # fine-tuning (section 6): what a row started from and how BatchNorm was treated
    "model.weights": None, "model.bn_reestimate": "auto", "model.freeze_bn": False,
    "optimizer.backbone_lr_mult": 1.0,
}


_ABSENT = object()


def _command(command: str | list[str]) -> str:
    """env.json's command: a string now; a list (sys.argv) in runs made before that change."""
    if isinstance(command, str):
        return command
    return " ".join(shlex.quote(a) for a in ["hemacnn", *command[1:]])


def _get(cfg: dict, dotted: str, default=None):
    node = cfg
    for part in dotted.split("."):
        node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
    return default if node is _ABSENT else node


def _val_macro_f1(run: Path, epoch_base: int = 1) -> tuple[float, int]:
    with (run / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    best = min(rows, key=lambda r: float(r["val_loss"]))
    classes = [k[len("val_precision_"):] for k in best if k.startswith("val_precision_")]
    f1s = []
    for c in classes:
        p, r = float(best[f"val_precision_{c}"]), float(best[f"val_recall_{c}"])
        f1s.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
    return sum(f1s) / len(f1s), int(best["epoch"]) + 1 - epoch_base


def row(run: Path, epoch_base: int = 1) -> dict:
    """One table row from a finished run folder."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    env = json.loads((run / "env.json").read_text())
    test = json.loads((run / "test_metrics.json").read_text())
    with (run / "metrics.csv").open(newline="") as fh:
        epochs = list(csv.DictReader(fh))
    val_f1, best_epoch = _val_macro_f1(run, epoch_base)
    # A key a run's config lacks (made before the option existed) had the paper's value.
    changes = [f"{k.split('.')[-1]}={_get(cfg, k)}" for k, v in PAPER.items()
               if _get(cfg, k, v) != v]
    lr = cfg["optimizer"]["lr"]
    out = {
        "run": run.name, "model": cfg["model"]["name"], "size": cfg["data"]["image_size"],
        "classes": len(cfg["data"]["classes"]), "epochs": len(epochs),
        "best_epoch": best_epoch, "recipe": ", ".join([f"lr={lr}", *changes]),
        "val_macro_f1": round(val_f1, 4), "test_macro_f1": round(test["macro_f1"], 4),
        "test_macro_f1_ci": (test.get("headline_ci") or {}).get("macro_f1"),
        "train_min": round(sum(float(e["time_s"]) for e in epochs) / 60, 2),
        "command": _command(env["command"]),
    }
    log = run.parent / f"{run.name}.log"
    if log.is_file():
        text = log.read_text()
        wall = re.search(r"wall_s: ([0-9.]+)", text) or re.search(r"^wall ([0-9.]+) s", text,
                                                                  re.M)
        clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):"
                          r"([0-9.]+)", text)
        if wall is None and clock:
            h, m, sec = clock.groups()
            out["wall_min"] = round((int(h or 0) * 3600 + int(m) * 60 + float(sec)) / 60, 2)
        load = re.search(r"start: \S+ .*load average: ([0-9.]+)", text)
        if wall:
            out["wall_min"] = round(float(wall.group(1)) / 60, 2)
        out["load_at_start"] = float(load.group(1)) if load else None
        # /usr/bin/time -v: CPU seconds used, which the machine's load does not inflate much;
        # with OMP_NUM_THREADS=1 it is about the wall time on one idle core.
        user = re.search(r"User time \(seconds\): ([0-9.]+)", text)
        system = re.search(r"System time \(seconds\): ([0-9.]+)", text)
        short = re.search(r"^wall [0-9.]+ s cpu ([0-9.]+)\+([0-9.]+)", text, re.M)  # time -f
        if user and system:
            out["cpu_min"] = round((float(user.group(1)) + float(system.group(1))) / 60, 2)
        elif short:
            out["cpu_min"] = round((float(short.group(1)) + float(short.group(2))) / 60, 2)
    return out


def _ci(ci: list[float] | None) -> str:
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def main(args: list[str]) -> None:
    with_json = "--no-json" not in args
    runs = [a for a in args if a != "--no-json"]
    epoch_base = 1
    if "--epoch-base" in runs:
        i = runs.index("--epoch-base")
        if i + 1 >= len(runs) or runs[i + 1] not in ("0", "1"):
            raise SystemExit("error: --epoch-base takes 0 or 1 (what the run folders' "
                             "metrics.csv counts its first epoch as)")
        epoch_base = int(runs[i + 1])
        del runs[i:i + 2]
    try:
        rows = [row(Path(r), epoch_base) for r in runs]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"error: not a finished hemacnn run folder: {exc}") from None
    print("| run | model | px | recipe (vs the paper's) | epochs | val macro-F1 | "
          "test macro-F1 [95% CI] | train min | wall min | CPU min | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['model']} | {r['size']} | {r['recipe']} | {r['epochs']} | "
              f"{r['val_macro_f1']:.3f} | {r['test_macro_f1']:.3f}{_ci(r['test_macro_f1_ci'])} | "
              f"{r['train_min']:.1f} | "
              f"{r.get('wall_min') or ''} | {r.get('cpu_min') or ''} | "
              f"{r.get('load_at_start') or ''} |")
    print("\nCommands:\n")
    for r in rows:
        print(f"- `{r['run']}`: `{r['command']}`")
    if with_json:
        print("\n```json")
        print(json.dumps(rows, indent=1))
        print("```")


if __name__ == "__main__":
    main(sys.argv[1:])
