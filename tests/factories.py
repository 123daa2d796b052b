"""What tests build, built once: image folders, tiny configs, model cards, fake run folders.

Synthetic images are for mechanics tests only (never for accuracy claims): classes told apart
by colour. Each builder takes the few settings tests vary, so a test that depended on exact
pixels keeps them.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from hemacnn.card import build_card
from hemacnn.classes import class_name
from hemacnn.data.scan import Entry
from hemacnn.data.splits import Splits, save_splits
from hemacnn.models import build_model

# Matek codes, and foreign (PBC-style) class names for the cross-dataset tests.
CELL_COLOURS = {"BLA": (180, 60, 60), "LYT": (60, 160, 60), "NGS": (60, 60, 190)}
PBC_COLOURS = {"LYT": (200, 60, 60), "neutrophil": (60, 180, 60), "platelet": (60, 60, 200)}
TWO_COLOURS = {"BLA": (170, 70, 70), "LYT": (70, 70, 170)}
BRIGHT_COLOURS = {"BLA": (200, 40, 40), "LYT": (40, 200, 40), "NGS": (40, 40, 200)}
GREY = (128, 128, 128)
RUN_SIZE = 48  # the fake run's input size: small but above MV3's minimum (42 px)


def image_folder(root: Path, counts: Mapping[str, int], *, size: int = 48,
                 colours: Mapping[str, tuple[int, int, int]] = PBC_COLOURS,
                 default: tuple[int, int, int] | None = None, sd: float = 30, seed: int = 0,
                 quality: int = 90, digits: int = 3) -> Path:
    """``CLASS/CLASS_<i>.jpg`` JPEGs of colour noise, ``counts[CLASS]`` a class; a class
    without a colour gets ``default``, else a random one. Returns ``root``."""
    rng = np.random.default_rng(seed)
    for code, n in counts.items():
        (root / code).mkdir(parents=True, exist_ok=True)
        base = colours.get(code, default)
        if base is None:
            base = tuple(int(v) for v in rng.integers(30, 220, 3))
        for i in range(n):
            img = rng.normal(base, sd, size=(size, size, 3)).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / code / f"{code}_{i:0{digits}d}.jpg",
                                      quality=quality)
    return root


def cell_folder(root: Path, per_class: int = 40, *, size: int = 48, seed: int = 0,
                digits: int = 5) -> Path:
    """BLA, LYT and NGS as reddish, greenish and bluish noise (the trainer tests' data)."""
    return image_folder(root, dict.fromkeys(CELL_COLOURS, per_class), size=size,
                        colours=CELL_COLOURS, sd=40, seed=seed, digits=digits)


def two_class_folder(root: Path) -> Path:
    """BLA and LYT, 30 images each of reddish and bluish noise (the study tests' data)."""
    return image_folder(root, dict.fromkeys(TWO_COLOURS, 30), colours=TWO_COLOURS, seed=1,
                        quality=75, digits=5)


def labelled_images(root: Path, per_class: int = 4,
                    classes: Sequence[str] = ("BLA", "LYT", "NGS")) -> list[tuple[str, str]]:
    """64 px bright JPEGs in CLASS/ folders (grey for other classes); returns the
    ``(relative path, class)`` rows of what it wrote, class by class."""
    image_folder(root, dict.fromkeys(classes, per_class), size=64, colours=BRIGHT_COLOURS,
                 default=GREY, sd=25, quality=95, digits=5)
    return [(f"{c}/{c}_{i:05d}.jpg", c) for c in classes for i in range(per_class)]


def random_png_entries(root: Path, n: int = 10) -> list[Entry]:
    """``n`` 40 px PNGs of random pixels, alternately in A/ and B/, as scan entries."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n):
        code = "A" if i % 2 else "B"
        (root / code).mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
        rel = f"{code}/img{i}.png"
        Image.fromarray(arr).save(root / rel)
        entries.append(Entry(rel, code, f"sha{i}", 40, 40, "ok"))
    return entries


# --------------------------------------------------------------------------- configs

TINY = {"name": "tiny", "seed": 0,
        "data": {"image_size": 48, "batch_size": 16},
        "model": {"name": "mv3", "width": 0.125},
        # export never: what the tests see must not depend on how long training took (auto's
        # rule); tests/test_fast_path.py asks for the export
        "trainer": {"max_epochs": 1, "patience": None, "accelerator": "cpu", "devices": 1,
                    "export": "never"}}


def tiny_config(path: Path, root: Path | None = None, **sections: Any) -> Path:
    """An eighth-width MV3 at 48 px for one epoch on the CPU (seconds), written as YAML to
    ``path``; each keyword merges into its section (a mapping) or sets a top-level key."""
    cfg = copy.deepcopy(TINY)
    if root is not None:
        cfg["data"]["root"] = str(root)
    for key, value in sections.items():
        if isinstance(value, Mapping):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV file as one dict a row."""
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def read_metrics(run: Path) -> list[dict[str, str]]:
    """A run's metrics.csv, one dict per epoch."""
    return read_csv(run / "metrics.csv")


# --------------------------------------------------------------------------- cards and runs

def arch(name: str, classes: Sequence[str], input_size: int, **options: Any) -> dict[str, Any]:
    """The ``arch`` entry of a card for ``name`` with ``options``, not built."""
    return {"name": name, "num_classes": len(classes), "input_size": input_size,
            "options": options}


def model_card(classes: Sequence[str], model_arch: Mapping[str, Any], *,
               data_root: str | None = None, manifest_hash: str | None = None,
               seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """A model card as training writes it (through the package's one card builder)."""
    return build_card(classes=list(classes), class_names=[class_name(c) for c in classes],
                      input_size=model_arch["input_size"], resize_method="nearest",
                      arch=dict(model_arch), data_root=data_root, manifest_hash=manifest_hash,
                      seed=seed, **extra)


def save_checkpoint(path: Path, model: torch.nn.Module, card: Mapping[str, Any]) -> Path:
    """``model`` and ``card`` as a checkpoint in train.py's format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"model." + k: v for k, v in model.state_dict().items()},
                "hyper_parameters": {"card": dict(card)}}, path)
    return path


def fake_run(run_dir: Path, data_root: Path, split_rows: Mapping[str, list[tuple[str, str]]],
             classes: Sequence[str] = ("BLA", "LYT", "NGS"), seed: int = 0,
             epochs: int = 3) -> Path:
    """A run folder in train.py's format, with a tiny untrained MV3 and a made-up history."""
    torch.manual_seed(seed)
    classes = list(classes)
    model = build_model("mv3", len(classes), RUN_SIZE, width=0.25, noise_std=1.0)
    card = model_card(classes, model.hemacnn_arch, data_root=str(data_root.resolve()),
                      manifest_hash="0" * 40, seed=seed)
    save_checkpoint(run_dir / "checkpoints" / "best.ckpt", model, card)
    (run_dir / "model_card.json").write_text(json.dumps(card))
    (run_dir / "config.yaml").write_text(
        f"name: test\ndata:\n  root: {data_root}\n  classes: [{', '.join(classes)}]\n"
        f"  image_size: {RUN_SIZE}\n  resize: nearest\nmodel:\n  name: mv3\nseed: {seed}\n")
    save_splits(Splits(split_rows.get("train", []), split_rows.get("val", []),
                       split_rows.get("test", []), classes, seed=seed), run_dir / "splits")
    rng = np.random.default_rng(seed)
    cols = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    cols += [f"val_{m}_{c}" for c in classes for m in ("precision", "recall")]
    with open(run_dir / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for e in range(epochs):
            row = [e, 1.0 / (e + 1), 0.5 + 0.1 * e, 1.1 / (e + 1), 0.45 + 0.1 * e]
            row += list(np.round(rng.uniform(0.4, 0.9, 2 * len(classes)), 3))
            if e == 0:
                row[-1] = ""  # train.py may leave a cell empty (e.g. class never predicted)
            w.writerow(row)
    return run_dir


def fake_labelled_run(tmp_path: Path, per_class: int = 4,
                      splits: Mapping[str, slice] | None = None) -> Path:
    """``fake_run`` over :func:`labelled_images` in ``tmp_path/data``; ``splits`` picks each
    split's rows (default: every row in every split)."""
    data = tmp_path / "data"
    rows = labelled_images(data, per_class)
    chosen = {k: rows[s] for k, s in (splits or {}).items()} if splits else \
        {"train": rows, "val": rows, "test": rows}
    return fake_run(tmp_path / "run", data, chosen)


def write_study(tmp_path: Path, grid: dict, epochs: int = 1, **extra: Any) -> Path:
    """A study over a tiny MV3 (48 px, width 0.06): a second or two per epoch."""
    tiny_config(tmp_path / "base.yaml", seed=3,
                data={"classes": ["BLA", "LYT"], "batch_size": 8}, model={"width": 0.06},
                optimizer={"name": "adam", "lr": 0.003},
                trainer={"max_epochs": epochs, "log_step_loss": True})
    study = {"study": "tiny", "base": "base.yaml", "grid": grid,
             "columns": {"optimizer": "optimizer.name", "lr": "optimizer.lr"},
             "summary": {"metrics": ["final_train_loss", "mean_train_loss"]},
             "figures": [{"kind": "step_loss", "panel_by": "optimizer"},
                         {"kind": "train_val"}], **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def trainer_config(tmp_path: Path, root: Path, **trainer: Any) -> Path:
    """The trainer tests' config (``tmp_path/tiny.yaml``): MV3 with input noise and L2 on
    BLA, LYT and NGS for two epochs; ``trainer`` keys on top."""
    return tiny_config(tmp_path / "tiny.yaml", root, seed=1,
                       data={"classes": list(CELL_COLOURS)},
                       model={"noise_std": 0.1, "l2": 0.001},
                       optimizer={"name": "adam", "lr": 0.003},
                       trainer={"max_epochs": 2, **trainer})


def onecycle_config(tmp_path: Path, root: Path) -> Path:
    """:func:`trainer_config` for 3 epochs of 22 mini-batches under a per-step one-cycle
    schedule and an EMA of the weights, logging every step and without time-based checkpoints
    (interruption tests)."""
    cfg = trainer_config(tmp_path, root, max_epochs=3, checkpoint_minutes=None,
                         log_step_loss=True)
    cfg.write_text(cfg.read_text().replace("batch_size: 16", "batch_size: 4")
                   + "recipe:\n  schedule: onecycle\n  ema_decay: 0.9\n")
    return cfg


# --------------------------------------------------------------------------- processes

def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a ``hemacnn`` child process: unbuffered output, and no run folder
    inherited from a training parent (a DDP worker's hint)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    env.pop("HEMACNN_RUN_DIR", None)
    return env


def cli_process(args: list[str], **kw: Any) -> subprocess.Popen:
    """``hemacnn ARGS`` in its own process group (so a test can signal or kill it), stdout
    and stderr together as text."""
    return subprocess.Popen([sys.executable, "-m", "hemacnn.cli", *args], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)
