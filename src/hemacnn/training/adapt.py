"""Adapt a trained run to another laboratory's cells with a few labelled ones (``hemacnn adapt``).

A new run folder starts from the parent run's weights and card and trains briefly on the
labelled cells: the review page's CSV (only the rows a person confirmed or re-assigned) or a
folder of class folders, named in the model's codes or through a class map. Trained naively,
such a fine-tune forgets the first laboratory (its weights and BatchNorm statistics move to the
new stain); the defaults of :class:`AdaptRecipe` are the measured answer
(``docs/results/adaptation``): half of every batch replayed from the parent's own training
images and BatchNorm statistics kept (a pull toward the parent's weights, L2-SP, is there too,
off by default).

Nothing is written until training is done: the folder is built under a temporary name beside
``--out`` and renamed at the end, so Ctrl-C or an error leaves no half-made run folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hemacnn.atomic import atomic_open, check_creatable, new_dir_mode, write_json
from hemacnn.card import extend_card, metrics_entry, read_card, write_card
from hemacnn.data.augment import dihedral
from hemacnn.data.colour import COLOUR_KEY, colour_stats
from hemacnn.data.images import load_images
from hemacnn.data.splits import load_splits
from hemacnn.errors import HemacnnError, Interrupted
from hemacnn.evaluation.evaluate import evaluate_run, labelled_items
from hemacnn.inference.checkpoint import read_checkpoint, weights_sha256
from hemacnn.inference.loading import load_checkpoint
from hemacnn.models.batchnorm import batchnorm_layers
from hemacnn.models.sources import file_sha256
from hemacnn.rundir import RunDir, find_checkpoint
from hemacnn.runinfo import environment_info
from hemacnn.scoring.classmap import SHIPPED, load_class_map, resolve
from hemacnn.training.trainlog import ProgressBar, device_notices_hidden

BN_MODES = ("frozen", "train")
STOPPED = "adaptation interrupted; no run folder was written"


@dataclass(frozen=True)
class AdaptRecipe:
    """How the labelled cells train the parent's network (defaults: docs/results/adaptation)."""

    steps: int = 120
    lr: float = 3e-4
    batch_size: int = 32
    replay: float = 0.5
    """Share of each batch drawn from the parent's own training images (0: none)."""
    replay_images: int = 500
    """How many of the parent's training images are loaded for replay (evenly per class)."""
    l2sp: float = 0.0
    """Weight of the squared distance to the parent's weights in the loss (L2-SP)."""
    bn: str = "frozen"
    """frozen: BatchNorm keeps the parent's statistics (eval mode) and only its scale and shift
    train; train: statistics follow the batches (the target cells and the replayed images)."""
    augment: bool = True
    """A random dihedral view of every image (cells have no preferred orientation)."""
    label_smoothing: float = 0.1
    seed: int = 0

    def check(self) -> None:
        """A one-line error for a value that cannot train."""
        if self.steps < 1 or self.batch_size < 2:
            raise HemacnnError(f"--steps must be at least 1 and the batch at least 2 (got "
                               f"{self.steps}, {self.batch_size})")
        if not 0.0 <= self.replay < 1.0:
            raise HemacnnError(f"--replay is the share of each batch from the parent's training "
                               f"images: give a number in [0, 1) (got {self.replay})")
        if self.lr <= 0 or self.l2sp < 0:
            raise HemacnnError(f"--lr must be positive and --l2sp not negative (got {self.lr}, "
                               f"{self.l2sp})")
        if self.bn not in BN_MODES:
            raise HemacnnError(f"--bn {self.bn!r}: choose one of {', '.join(BN_MODES)}")


@dataclass
class LabelledCells:
    """The labelled cells to adapt on, in the model's classes."""

    files: list[Path]
    labels: list[str]
    source: Path
    sha256: str
    left_out: dict[str, int] = field(default_factory=dict)
    unreviewed: int = 0

    def counts(self) -> dict[str, int]:
        """Labelled cells per model class, in the order first seen."""
        return dict(Counter(self.labels))


def _sha256_of_listing(files: list[Path], labels: list[str], root: Path) -> str:
    """Of a folder's labelled cells: each (relative path, class, file hash), in path order."""
    digest = hashlib.sha256()
    for f, label in sorted(zip(files, labels, strict=True)):
        rel = Path(os.path.relpath(f, root)).as_posix()
        digest.update(f"{rel}\t{label}\t{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def read_labelled_cells(labels: str | os.PathLike, card: dict[str, Any],
                        class_map: str | os.PathLike | None = None) -> LabelledCells:
    """The labelled cells of a reviewed CSV or a class-folder tree, each with one model class;
    a one-line error for input adaptation cannot use."""
    path = Path(labels)
    if not path.exists():
        raise HemacnnError(f"labels {path} not found; give the review page's CSV or a folder "
                           "of class folders (CLASS/image.jpg)")
    if path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
        raise HemacnnError(f"labels folder {path} is empty; give a folder of class folders "
                           "(CLASS/image.jpg) or the review page's CSV")
    resolved = None
    if class_map is not None:
        resolved = resolve(load_class_map(class_map), card["classes"], "the parent model")
    try:
        files, targets, skipped, unknown, unreviewed = labelled_items(path, card, resolved)
    except HemacnnError as exc:
        if resolved is not None:
            raise
        raise HemacnnError(f"{exc}; labels in another dataset's classes need --class-map MAP "
                           f"(e.g. {SHIPPED[0]})") from None
    if unknown and resolved is None:
        names = ", ".join(f"{c} ({n})" for c, n in sorted(unknown.items()))
        raise HemacnnError(f"labels name classes the model lacks: {names}; its classes are "
                           f"{', '.join(card['classes'])}: give --class-map MAP (e.g. "
                           f"{SHIPPED[0]}) or relabel them")
    if skipped:
        first = skipped[0]
        raise HemacnnError(f"{len(skipped)} labelled image(s) cannot be used, first "
                           f"{first['path']}: {first['status']} {first['detail']}".rstrip()
                           + "; fix or remove them")
    # A truth that the map sends to several model classes names no one class to learn.
    multi = Counter(t for t in targets if len(t) > 1)
    if multi:
        what = ", ".join(f"{'/'.join(t)} ({n})" for t, n in multi.items())
        raise HemacnnError(f"the class map sends some labelled cells to several model classes "
                           f"({what}); adaptation needs one class per cell: use a map with one "
                           "class per folder")
    cells = [t[0] for t in targets]
    if len(set(cells)) < 2:
        raise HemacnnError(f"labels hold {len(set(cells))} class(es) of the model "
                           f"({', '.join(sorted(set(cells))) or 'none'}); adaptation needs "
                           "labelled cells of at least 2 classes")
    root = path if path.is_dir() else path.parent
    digest = (_sha256_of_listing(files, cells, root) if path.is_dir()
              else file_sha256(path))
    return LabelledCells(files, cells, path, digest, dict(unknown), unreviewed)


def _replay_images(parent: Path, card: dict[str, Any], n: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    """Up to ``n`` of the parent's training images (as evenly as the classes allow) with their
    class indices, and a note when there are none to replay."""
    size = int(card["input_size"])
    empty = (np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64))
    root = Path(card.get("data_root") or "")
    if n <= 0:
        return (*empty, "")
    if not root.is_dir() or not RunDir(parent).splits.is_dir():
        return (*empty, f"no replay: the parent's training images ({root}) are not here, so "
                "nothing holds the first laboratory in place; expect it to be forgotten")
    rows = load_splits(RunDir(parent).splits).split("train")
    rng = np.random.default_rng([seed, 1])
    by_class: dict[str, list[str]] = {}
    for rel, code in rows:
        if code in card["classes"]:
            by_class.setdefault(code, []).append(rel)
    per = -(-n // max(1, len(by_class)))
    chosen = [(rel, code) for code, rels in by_class.items()
              for rel in rng.permutation(rels)[:per]]
    images, ok, _ = load_images([root / rel for rel, _ in chosen], card)
    labels = np.array([card["classes"].index(chosen[i][1]) for i in ok], np.int64)
    return images, labels, ""


class _Batches(Dataset):
    """Batch ``i`` of the adaptation, drawn from (seed, i): the target cells class-balanced
    (a review's labels follow the prevalence), the replayed images uniformly."""

    def __init__(self, target: np.ndarray, target_y: np.ndarray, replay: np.ndarray,
                 replay_y: np.ndarray, recipe: AdaptRecipe) -> None:
        self.target, self.target_y, self.replay, self.replay_y = target, target_y, replay, replay_y
        self.recipe = recipe
        n_replay = int(round(recipe.batch_size * recipe.replay)) if len(replay) else 0
        self.n_replay, self.n_target = n_replay, recipe.batch_size - n_replay
        self.by_class = [np.flatnonzero(target_y == c) for c in np.unique(target_y)]

    def __len__(self) -> int:
        return self.recipe.steps

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.recipe.seed, i])
        classes = rng.integers(len(self.by_class), size=self.n_target)
        t = np.array([rng.choice(self.by_class[c]) for c in classes], dtype=np.int64)
        r = rng.integers(len(self.replay), size=self.n_replay)
        x = np.concatenate([self.target[t], self.replay[r]])
        y = np.concatenate([self.target_y[t], self.replay_y[r]])
        batch = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float() / 255.0
        if self.recipe.augment:
            views = rng.integers(8, size=len(batch))
            batch = torch.stack([dihedral(im, int(k)) for im, k in zip(batch, views,
                                                                        strict=True)])
        return batch, torch.from_numpy(y)


class AdaptModule(L.LightningModule):
    """The parent's network trained on the labelled cells: cross-entropy, plus ``l2sp`` times
    the squared distance to the parent's weights; BatchNorm statistics kept when ``bn`` is
    frozen."""

    def __init__(self, model: nn.Module, recipe: AdaptRecipe) -> None:
        super().__init__()
        self.model, self.recipe = model, recipe
        self.anchor = [p.detach().clone() for p in model.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images in [0, 1]."""
        return self.model(x.contiguous(memory_format=torch.channels_last))

    def on_train_epoch_start(self) -> None:
        if self.recipe.bn == "frozen":  # eval mode: the parent's statistics normalise
            for bn in batchnorm_layers(self.model):
                bn.eval()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x).float(), y,
                                           label_smoothing=self.recipe.label_smoothing)
        if self.recipe.l2sp:
            pull = sum((p - a).pow(2).sum() for p, a in
                       zip(self.model.parameters(), self.anchor, strict=True))
            loss = loss + self.recipe.l2sp * pull
        self.log("loss", loss, on_step=True, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        # No weight decay: it would pull toward zero, away from the parent's weights.
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.recipe.lr, weight_decay=0.0)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.recipe.steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}


def _fit(module: AdaptModule, loader: DataLoader, progress: bool) -> None:
    bar = progress and os.isatty(1)
    try:
        with device_notices_hidden():
            trainer = L.Trainer(
                max_epochs=1, accelerator="cpu" if not torch.cuda.is_available() else "auto",
                devices=1, logger=False, enable_checkpointing=False,
                enable_model_summary=False, enable_progress_bar=bar,
                callbacks=[ProgressBar()] if bar else [], num_sanity_val_steps=0)
    except (MisconfigurationException, ValueError) as exc:
        raise HemacnnError(f"trainer settings rejected by Lightning: {exc}") from None
    try:
        trainer.fit(module, train_dataloaders=loader)
    except SystemExit:  # Lightning's answer to Ctrl-C: a graceful shutdown, then exit(1)
        raise Interrupted(STOPPED) from None
    if trainer.interrupted:
        raise Interrupted(STOPPED)


def _checkpoint(model: nn.Module, card: dict[str, Any], config: dict[str, Any] | None
                ) -> dict[str, Any]:
    """A checkpoint the inference path loads as it loads a trained run's."""
    return {"state_dict": {f"model.{k}": v.detach().cpu() for k, v in
                           model.state_dict().items()},
            "hyper_parameters": {"card": card, "config": config, "class_weights": None}}


def _rehome(path: Path, tmp: Path, final: Path) -> None:
    """Rewrite paths under ``tmp`` as under ``final`` in a JSON file the build wrote: each string
    value that is ``tmp`` or starts with it as a folder, read as JSON (a textual replace would
    miss a path JSON escapes, such as Windows' backslashes, and could touch other text)."""
    moves = [(str(tmp.resolve()), str(final.resolve())), (str(tmp), str(final))]

    def moved(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(v) for v in value]
        if isinstance(value, str):
            for old, new in moves:
                if value == old or value.startswith(old + os.sep):
                    return new + value[len(old):]
        return value

    write_json(path, moved(json.loads(path.read_text(encoding="utf-8"))))


def adapt(run: str | os.PathLike, labels: str | os.PathLike, out: str | os.PathLike,
          class_map: str | os.PathLike | None = None, domain: str | None = None,
          recipe: AdaptRecipe | None = None, progress: bool = True, command: str = ""
          ) -> tuple[Path, dict[str, Any]]:
    """Adapt run ``run`` to the cells labelled in ``labels``; (the new run folder, its
    adaptation record). Ctrl-C at any moment before the folder is complete leaves none."""
    try:
        return _adapt(Path(run), labels, Path(out), class_map, domain, recipe or AdaptRecipe(),
                      progress, command)
    except KeyboardInterrupt:  # outside Lightning's own handling (loading, set-up, writing)
        raise Interrupted(STOPPED) from None


def _adapt(parent: Path, labels: str | os.PathLike, out: Path,
           class_map: str | os.PathLike | None, domain: str | None, recipe: AdaptRecipe,
           progress: bool, command: str) -> tuple[Path, dict[str, Any]]:
    recipe.check()
    card = read_card(parent)
    if RunDir(parent).is_ensemble:
        raise HemacnnError(f"{parent} is an ensemble; adapt one of its member runs instead")
    ckpt = find_checkpoint(parent)
    if out.exists():
        raise HemacnnError(f"{out} already exists; choose another --out (adapt never "
                           "overwrites a folder)")
    check_creatable(out.parent)
    cells = read_labelled_cells(labels, card, class_map)
    images, ok, errors = load_images(cells.files, card)
    if errors:
        raise HemacnnError(f"{len(errors)} labelled image(s) cannot be read, first {errors[0]}")
    target_y = np.array([card["classes"].index(c) for c in cells.labels], np.int64)
    replay, replay_y, note = _replay_images(parent, card, recipe.replay_images
                                            if recipe.replay else 0, recipe.seed)
    if note:
        print(note, flush=True)
    model, _ = load_checkpoint(ckpt, device="cpu", prepare=False)
    model = model.train().to(memory_format=torch.channels_last)
    L.seed_everything(recipe.seed, verbose=False)
    module = AdaptModule(model, recipe)
    loader = DataLoader(_Batches(images, target_y, replay, replay_y, recipe), batch_size=None)
    print(f"adapting {parent} on {len(cells.files)} labelled cells of "
          f"{len(set(cells.labels))} classes, {len(replay)} of its "
          f"training images replayed, {recipe.steps} steps (Ctrl-C stops, writing nothing)",
          flush=True)
    start = time.perf_counter()
    _fit(module, loader, progress)
    seconds = time.perf_counter() - start
    model.eval()

    name = domain or (cells.source.name if cells.source.is_dir() else cells.source.parent.name)
    record = {
        "parent": str(parent.resolve()),
        "parent_checkpoint_sha256": weights_sha256(ckpt),
        "labels": str(cells.source.resolve()),
        "labels_sha256": cells.sha256,
        "class_map": None if class_map is None else (
            str(class_map) if str(class_map) in SHIPPED else str(Path(class_map).resolve())),
        "domain": name,
        "counts": cells.counts(),
        "left_out": cells.left_out,
        "unreviewed": cells.unreviewed,
        "replay_images": len(replay),
        "recipe": asdict(recipe),
        "parent_colour_stats": card.get(COLOUR_KEY),
    }
    # The colour check of predict and the review page now measures against the new domain.
    new_card = extend_card({k: v for k, v in card.items() if k != "metrics"},
                           adaptation=record, **{COLOUR_KEY: colour_stats(images)})
    config = _parent_config(ckpt)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        os.chmod(tmp, new_dir_mode())  # mkdtemp's is private; a run folder is as any folder
        run_dir = RunDir(tmp)
        run_dir.checkpoints.mkdir()
        with atomic_open(run_dir.best, "wb") as fh:
            torch.save(_checkpoint(model, new_card, config), fh)
        if RunDir(parent).splits.is_dir():  # the parent's test split stays the in-domain test
            shutil.copytree(RunDir(parent).splits, run_dir.splits)
        write_card(run_dir.card, new_card)
        write_json(run_dir.env, {**environment_info(recipe.seed, command),
                                 "adapt_seconds": round(seconds, 2)})
        result = _in_domain_test(tmp, new_card)
        for written in sorted(tmp.glob("*.json")):  # the in-domain test names its folder
            _rehome(written, tmp, out)
        os.replace(tmp, out)  # the last step: before it there is no folder at --out
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, {**record, "seconds": seconds, "in_domain": result}


def _parent_config(ckpt: Path) -> dict[str, Any] | None:
    return (read_checkpoint(ckpt).get("hyper_parameters") or {}).get("config")


def _in_domain_test(run_dir: Path, card: dict[str, Any]) -> dict[str, Any] | None:
    """The adapted model on the parent's own test split (what it may have forgotten), written
    as the run's test metrics; None when the parent's images are not here. One view per image
    (8 would take longer than the adaptation): `hemacnn evaluate RUN --tta` gives the other."""
    if not RunDir(run_dir).splits.is_dir() or not Path(card.get("data_root") or "").is_dir():
        return None
    result = evaluate_run(run_dir, split="test")
    run = RunDir(run_dir)
    write_json(run.test_metrics, result)
    write_card(run.card, extend_card(read_card(run_dir),
                                     metrics=metrics_entry(result, run.best, tta=False)))
    return result


def format_adaptation(out: Path, record: dict[str, Any]) -> str:
    """What ``hemacnn adapt`` prints: the labelled cells used, the time, the in-domain test."""
    counts = ", ".join(f"{c} {n}" for c, n in record["counts"].items())
    lines = [f"adapted {record['parent']} to {record['domain']}: {sum(record['counts'].values())}"
             f" labelled cells ({counts}), {record['replay_images']} of the parent's training "
             f"images replayed, {record['recipe']['steps']} steps in {record['seconds']:.0f} s"]
    if record["left_out"]:
        left = ", ".join(f"{c} ({n})" for c, n in sorted(record["left_out"].items()))
        lines.append(f"left out (no class of the model): {left}")
    if record["unreviewed"]:
        lines.append(f"skipped {record['unreviewed']} rows nobody reviewed (empty "
                     "reviewed_class)")
    test = record.get("in_domain")
    if test is None:
        lines.append("in-domain test: not measured (the parent's images are not here)")
    else:
        lines.append(f"in-domain test (the parent's test split, {test['n']} images): macro F1 "
                     f"{test['macro_f1']:.4f}, accuracy {test['accuracy']:.4f}")
    lines.append(f"run folder: {out}")
    return "\n".join(lines)
