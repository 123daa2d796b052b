"""Training-recipe pieces beside the trainer: optimizers, schedules, losses, mixing, and the
callbacks of the optional ones (EMA, a frozen backbone, frozen BatchNorm).

Each piece is switched on by the config's ``optimizer`` / ``recipe`` / ``imbalance`` sections;
with their defaults the trainer runs the paper's recipe unchanged (constant-rate Adam, plain
categorical cross-entropy). Everything here is a thin use of PyTorch's and torchvision's own
implementations, so the behaviour is theirs and documented there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torchvision.transforms import v2

from hemacnn.config import Config, OptimizerConfig, RecipeConfig
from hemacnn.data.balance import inverse_frequency_weights
from hemacnn.models.batchnorm import batchnorm_layers
from hemacnn.models.zoo import classifier_head, set_backbone_trainable


def make_optimizer(params: Iterable[nn.Parameter] | list[dict[str, Any]], o: OptimizerConfig
                   ) -> torch.optim.Optimizer:
    """Adam / Adadelta (the paper's), AdamW (decoupled weight decay) or SGD with momentum.

    ``params`` may be parameter groups with their own ``lr`` (see :func:`param_groups`)."""
    wd = o.weight_decay
    if o.name == "adadelta":
        return torch.optim.Adadelta(params, lr=o.lr, rho=o.rho, eps=o.eps, weight_decay=wd)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                                 weight_decay=wd)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                               weight_decay=wd)
    return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                            weight_decay=wd)


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float = 1.0
                 ) -> Iterable[nn.Parameter] | list[dict[str, Any]]:
    """All parameters at ``lr``, or (fine-tuning) the classifier at ``lr`` and the backbone at
    ``lr * backbone_lr_mult``: the new head must learn from scratch, the pretrained features
    only adapt. The head's group is first, so ``param_groups[0]`` is the configured rate."""
    if backbone_lr_mult == 1.0:
        return model.parameters()
    head = list(classifier_head(model).parameters())
    ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": head, "lr": lr}, {"params": backbone, "lr": lr * backbone_lr_mult}]


def warmup_cosine(warmup_steps: int, total_steps: int, floor: float):
    """LR multiplier per step: linear rise over ``warmup_steps``, then cosine down to ``floor``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, r: RecipeConfig,
                   total_steps: int, max_epochs: int) -> dict[str, Any] | None:
    """Lightning's lr_scheduler entry for ``recipe.schedule`` (None for a constant rate).

    Each parameter group follows the schedule from its own configured rate."""
    kind = r.schedule
    if kind == "none":
        return None
    lrs = [g["lr"] for g in optimizer.param_groups]
    steps_per_epoch = max(1, total_steps // max(1, max_epochs))
    warmup = int(round(r.warmup_epochs * steps_per_epoch))
    if kind == "onecycle":
        # Rise over warmup_epochs (default: torch's 30% of the run), then cosine annealing.
        pct = min(0.9, warmup / total_steps) if warmup else 0.3
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lrs, total_steps=max(2, total_steps), pct_start=pct,
            cycle_momentum=False)  # keep the configured betas/momentum fixed
        return {"scheduler": sched, "interval": "step"}
    if kind == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(warmup, total_steps, r.min_lr_ratio))
        return {"scheduler": sched, "interval": "step"}
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=r.plateau_factor, patience=r.plateau_patience,
        min_lr=[lr * r.min_lr_ratio for lr in lrs])
    return {"scheduler": sched, "interval": "epoch", "monitor": "val_loss"}


def classification_loss(logits: torch.Tensor, target: torch.Tensor,
                        weight: torch.Tensor | None = None, label_smoothing: float = 0.0,
                        focal_gamma: float = 0.0) -> torch.Tensor:
    """Cross-entropy (optionally class-weighted, label-smoothed) or focal loss, in fp32.

    ``target`` is class indices or (mixup/cutmix) class probabilities. Focal loss (Lin et al.
    2017) down-weights well-classified samples by (1 - p_t)^gamma; gamma 0 is cross-entropy.
    """
    logits = logits.float()
    if focal_gamma == 0.0:
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=label_smoothing)
    n = logits.shape[1]
    t = target.float() if target.is_floating_point() else F.one_hot(target, n).float()
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / n
    logp = F.log_softmax(logits, dim=1)
    per_class = -t * (1.0 - logp.exp()).pow(focal_gamma) * logp
    if weight is not None:
        per_class = per_class * weight
    return per_class.sum(dim=1).mean()


def batch_mixer(mixup_alpha: float, cutmix_alpha: float, num_classes: int):
    """torchvision.transforms.v2 MixUp / CutMix (one of them per batch when both), or None."""
    if not mixup_alpha and not cutmix_alpha:
        return None
    steps = []
    if cutmix_alpha:
        steps.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if mixup_alpha:
        steps.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    return steps[0] if len(steps) == 1 else v2.RandomChoice(steps)


def ema_decay_at(decay: float, n: int) -> float:
    """The decay of the update after ``n`` averages: min(decay, (1 + n) / (10 + n)).

    The warm-up of TensorFlow's and timm's model EMA: without it a short run's average still
    holds much of the random initialisation (0.99^136 = 25% after 136 steps at 0.99, measured
    here to leave the averaged model at chance on the sample's 8 classes).
    """
    return min(decay, (1.0 + n) / (10.0 + n))


def _ema_warmup_fn(decay: float):
    """A ``multi_avg_fn`` for torch's AveragedModel: its EMA update with the warm-up above."""

    @torch.no_grad()
    def update(avg: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        d = ema_decay_at(decay, int(n))
        if torch.is_floating_point(avg[0]) or torch.is_complex(avg[0]):
            torch._foreach_lerp_(avg, current, 1 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked)
            for a, c in zip(avg, current, strict=True):
                a.copy_(a * d + c * (1 - d))

    return update


def make_ema(model: nn.Module, decay: float) -> nn.Module:
    """torch's exponential moving average (AveragedModel) of ``model``'s weights and BatchNorm
    buffers, with the usual decay warm-up (:func:`ema_decay_at`)."""
    ema = AveragedModel(model, multi_avg_fn=_ema_warmup_fn(decay), use_buffers=True)
    for p in ema.parameters():  # updated by averaging, never by the optimizer
        p.requires_grad_(False)
    return ema


def progressive_size(start: int, full: int, t: float) -> int:
    """A linear ramp from ``start`` (t=0) to ``full`` (t=1) px, in steps of 8 px."""
    size = start + (full - start) * t
    return int(min(full, max(start, 8 * round(size / 8))))


def train_size(r: RecipeConfig, epoch: int, full: int) -> int:
    """The training input size of ``epoch`` (0-based) under ``recipe.progressive``."""
    if not r.progressive:
        return full
    start, ramp = r.progressive
    if epoch >= ramp:
        return full
    return progressive_size(start, full, epoch / ramp)


def progressive_resize(r: RecipeConfig, x: torch.Tensor, epoch: int) -> torch.Tensor:
    """Shrink a training batch to ``epoch``'s size (bilinear, antialiased: area-like)."""
    size = train_size(r, epoch, x.shape[-1])
    if size == x.shape[-1]:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)


def total_steps(trainer: L.Trainer) -> int:
    """Optimizer steps in the whole run, for the schedule.

    Lightning's ``estimated_stepping_batches`` builds the training iterator before a
    checkpoint is restored, so a mid-epoch resume would replay the epoch's first batches;
    on one device the figure comes from the datamodule's loader instead (building a loader
    object iterates nothing). DDP keeps Lightning's figure (its sampler splits the data).
    """
    t = trainer
    dm = t.datamodule
    if t.world_size > 1 or dm is None or t.accumulate_grad_batches != 1:
        return int(t.estimated_stepping_batches)
    per_epoch = len(dm.train_dataloader())
    limit = t.limit_train_batches
    if isinstance(limit, int):
        per_epoch = min(per_epoch, limit)
    elif limit is not None and limit < 1.0:
        per_epoch = max(1, int(per_epoch * limit))
    return per_epoch * t.max_epochs


def class_weights(cfg: Config, dm) -> list[float] | None:
    """imbalance.class_weights: n / (k * n_class) over the training split, as plain floats."""
    if not cfg.imbalance.class_weights:
        return None
    labels = dm.train_dataset().labels()
    return [float(w) for w in inverse_frequency_weights(labels, len(dm.class_codes))]


# --- the optional parts of training, as Lightning callbacks ---


class ExponentialMovingAverage(Callback):
    """``recipe.ema_decay``: an average of the weights that validation, checkpoint selection,
    the test and ``predict`` use (:func:`make_ema`, with its decay warm-up).

    Not Lightning's ``EMAWeightAveraging``: that swaps the average into the network for
    validation (so the L2 term of the validation loss would be the average's, not the trained
    weights') and writes the average as the checkpoint's ``model.*`` weights. This one keeps
    the average a submodule, ``ema``, of the LightningModule, so checkpoints hold it under
    ``ema.module.*`` beside the trained weights (what
    :func:`hemacnn.inference.checkpoint.model_weights`
    reads, and what runs saved before read on resume) and Lightning restores it on resume with
    the rest of the module. It updates before the checkpoint callbacks save after a batch, so a
    mid-epoch or Ctrl-C checkpoint holds the average of every batch it trained.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Made when fit begins, after the initial weights are set (its first update copies the
        # trained weights anyway); before a checkpoint is restored, which fills it.
        if stage == "fit" and getattr(pl_module, "ema", None) is None:
            pl_module.ema = make_ema(pl_module.model, self.decay)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        pl_module.ema.update_parameters(pl_module.model)


class FreezeBackbone(Callback):
    """``recipe.freeze_backbone_epochs``: train the classifier alone for N epochs, then all.

    Not Lightning's ``BackboneFinetuning``: that leaves the backbone out of the optimizer until
    it thaws, then adds it as a new parameter group at a growing rate, so a one-cycle or cosine
    schedule (laid out over the groups at the start) and ``optimizer.backbone_lr_mult`` would
    not apply to it. Here the backbone stays in its group; frozen, it gets no gradient and
    the optimizer leaves it alone.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_backbone_trainable(pl_module.model, trainer.current_epoch >= self.epochs)


class FreezeBatchNorm(Callback):
    """``model.freeze_bn``: every BatchNorm layer stays in eval mode while training (its
    statistics frozen at the pretrained ones; its weight and bias still learn).

    Lightning trains the module in the mode it was built in and, after each validation, puts
    back the modes it found, so setting them at each epoch's start holds for the whole epoch.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for bn in batchnorm_layers(pl_module.model):
            bn.eval()


def recipe_callbacks(cfg: Config) -> list[Callback]:
    """The callbacks of the recipe options that are switched on (none for the paper's)."""
    callbacks: list[Callback] = []
    if cfg.recipe.schedule != "none":  # the rate changes: log it (CSV + TensorBoard)
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if cfg.model.freeze_bn:
        callbacks.append(FreezeBatchNorm())
    if cfg.recipe.freeze_backbone_epochs:
        callbacks.append(FreezeBackbone(cfg.recipe.freeze_backbone_epochs))
    if cfg.recipe.ema_decay:
        callbacks.append(ExponentialMovingAverage(cfg.recipe.ema_decay))
    return callbacks
