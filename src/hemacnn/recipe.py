"""Training-recipe pieces beside the trainer: optimizers, schedules, losses, mixing, EMA.

Each piece is switched on by the config's ``optimizer`` / ``recipe`` / ``imbalance`` sections;
with their defaults the trainer runs the paper's recipe unchanged (constant-rate Adam, plain
categorical cross-entropy). Everything here is a thin use of PyTorch's and torchvision's own
implementations, so the behaviour is theirs and documented there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def make_optimizer(params: Iterable[nn.Parameter] | list[dict[str, Any]], o: dict[str, Any]
                   ) -> torch.optim.Optimizer:
    """Adam / Adadelta (the paper's), AdamW (decoupled weight decay) or SGD with momentum.

    ``params`` may be parameter groups with their own ``lr`` (see :func:`param_groups`)."""
    wd = o.get("weight_decay", 0.0)
    if o["name"] == "adadelta":
        return torch.optim.Adadelta(params, lr=o["lr"], rho=o["rho"], eps=o["eps"],
                                    weight_decay=wd)
    if o["name"] == "adamw":
        return torch.optim.AdamW(params, lr=o["lr"], betas=(o["beta1"], o["beta2"]),
                                 eps=o["eps"], weight_decay=wd)
    if o["name"] == "sgd":
        return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"],
                               nesterov=o["nesterov"], weight_decay=wd)
    return torch.optim.Adam(params, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                            weight_decay=wd)


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float = 1.0
                 ) -> Iterable[nn.Parameter] | list[dict[str, Any]]:
    """All parameters at ``lr``, or (fine-tuning) the classifier at ``lr`` and the backbone at
    ``lr * backbone_lr_mult``: the new head must learn from scratch, the pretrained features
    only adapt. The head's group is first, so ``param_groups[0]`` is the configured rate."""
    if backbone_lr_mult == 1.0:
        return model.parameters()
    from hemacnn.models.zoo import classifier_head

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


def make_scheduler(optimizer: torch.optim.Optimizer, r: dict[str, Any],
                   total_steps: int, max_epochs: int) -> dict[str, Any] | None:
    """Lightning's lr_scheduler entry for ``recipe.schedule`` (None for a constant rate).

    Each parameter group follows the schedule from its own configured rate."""
    kind = r.get("schedule", "none")
    if kind == "none":
        return None
    lrs = [g["lr"] for g in optimizer.param_groups]
    steps_per_epoch = max(1, total_steps // max(1, max_epochs))
    warmup = int(round(r.get("warmup_epochs", 0.0) * steps_per_epoch))
    if kind == "onecycle":
        # Rise over warmup_epochs (default: torch's 30% of the run), then cosine annealing.
        pct = min(0.9, warmup / total_steps) if warmup else 0.3
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lrs, total_steps=max(2, total_steps), pct_start=pct,
            cycle_momentum=False)  # keep the configured betas/momentum fixed
        return {"scheduler": sched, "interval": "step"}
    if kind == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(warmup, total_steps, r.get("min_lr_ratio", 0.0)))
        return {"scheduler": sched, "interval": "step"}
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=r["plateau_factor"], patience=r["plateau_patience"],
        min_lr=[lr * r.get("min_lr_ratio", 0.0) for lr in lrs])
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
    from torchvision.transforms import v2

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
    from torch.optim.swa_utils import AveragedModel

    ema = AveragedModel(model, multi_avg_fn=_ema_warmup_fn(decay), use_buffers=True)
    for p in ema.parameters():  # updated by averaging, never by the optimizer
        p.requires_grad_(False)
    return ema


# --- from the config to the trainer's parts (kept here so train.py stays the paper's loop) ---

def recipe_options(cfg) -> dict[str, Any]:
    """The plain-typed recipe settings the LightningModule needs (saved in its hparams)."""
    r = cfg.recipe.model_dump()
    if r.get("progressive") is not None:
        r["progressive"] = list(r["progressive"])  # plain YAML/JSON types in hparams
    r["focal_gamma"] = cfg.imbalance.focal_gamma
    r["freeze_bn"] = cfg.model.freeze_bn
    return r


def recipe_data_options(cfg) -> dict[str, Any]:
    """HemaDataModule keyword arguments for imbalance.* and the richer augmentation."""
    imb, r = cfg.imbalance, cfg.recipe
    balanced = None
    if imb.sampler == "balanced":
        balanced = imb.per_class if imb.per_class is not None else True
    return {"other": imb.other, "balanced": balanced, "stain_jitter": r.stain_jitter,
            "crop_scale": r.crop_scale, "hed_jitter": r.hed_jitter}


def class_weights(cfg, dm) -> list[float] | None:
    """imbalance.class_weights: n / (k * n_class) over the training split, as plain floats."""
    if not cfg.imbalance.class_weights:
        return None
    from hemacnn.data.balance import inverse_frequency_weights

    labels = dm.train_dataset().labels()
    return [float(w) for w in inverse_frequency_weights(labels, len(dm.class_codes))]


def recipe_callbacks(cfg) -> list:
    """Lightning's LearningRateMonitor when the rate changes (it logs to CSV + TensorBoard)."""
    if cfg.recipe.schedule == "none":
        return []
    from lightning.pytorch.callbacks import LearningRateMonitor

    return [LearningRateMonitor(logging_interval="epoch")]


def progressive_size(start: int, full: int, t: float) -> int:
    """A linear ramp from ``start`` (t=0) to ``full`` (t=1) px, in steps of 8 px."""
    size = start + (full - start) * t
    return int(min(full, max(start, 8 * round(size / 8))))


class RecipeHooks:
    """The LightningModule side of the recipe (mixed into :class:`hemacnn.train.CellClassifier`).

    Optimizer and schedule, the training loss, mixup/cutmix, EMA, backbone freezing and
    initial weights. With an empty recipe it is the paper's: Adam or Adadelta at a constant
    rate and plain cross-entropy, and no EMA or mixing objects exist.
    """

    def setup_recipe(self, recipe: dict[str, Any] | None, weights: list[float] | None,
                     num_classes: int) -> None:
        """Build the recipe's parts (called from ``__init__``, after ``self.model``)."""
        self.recipe: dict[str, Any] = dict(recipe or {})
        self.register_buffer("class_weight", None if weights is None else
                             torch.tensor(weights, dtype=torch.float32), persistent=False)
        self.mixer = batch_mixer(self.recipe.get("mixup_alpha", 0.0),
                                 self.recipe.get("cutmix_alpha", 0.0), num_classes)
        decay = self.recipe.get("ema_decay")
        self.ema = make_ema(self.model, decay) if decay else None

    def load_initial_weights(self, path: str):
        """Start from a local state-dict file (``model.weights``); the EMA starts there too.

        Returns the :class:`hemacnn.models.zoo.WeightsReport`."""
        from hemacnn.models.zoo import load_pretrained

        report = load_pretrained(self.model, path)
        self.sync_ema()
        return report

    def zero_head(self) -> None:
        """``model.head_init: zero``: the classifier starts at zero (the EMA too)."""
        from hemacnn.models.zoo import zero_head

        zero_head(self.model)
        self.sync_ema()

    def sync_ema(self) -> None:
        """Restart the EMA from the current weights (after they were set, not trained)."""
        if self.ema is not None:
            self.ema.module.load_state_dict(self.model.state_dict())

    def train(self, mode: bool = True):
        """``nn.Module.train``, except that with ``model.freeze_bn`` BatchNorm stays in eval
        mode (its statistics frozen at the pretrained ones; weight and bias still learn)."""
        super().train(mode)
        if mode:
            self._freeze_batchnorm()
        return self

    def _freeze_batchnorm(self) -> None:
        if getattr(self, "recipe", {}).get("freeze_bn"):
            from hemacnn.models.batchnorm import batchnorm_layers

            for bn in batchnorm_layers(self.model):
                bn.eval()

    def eval_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for validation: the averaged weights when EMA is on (they are what is saved
        for prediction, so checkpoints are selected by them)."""
        if self.ema is None:
            return self(x)
        return self.ema.module(x.contiguous(memory_format=torch.channels_last))

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MixUp/CutMix the batch (soft targets) when configured, else return it unchanged."""
        return (x, y) if self.mixer is None else self.mixer(x, y)

    def train_size(self, epoch: int, full: int) -> int:
        """The training input size of ``epoch`` (0-based) under ``recipe.progressive``."""
        prog = self.recipe.get("progressive")
        if not prog:
            return full
        start, ramp = prog
        if epoch >= ramp:
            return full
        return progressive_size(start, full, epoch / ramp)

    def progressive_resize(self, x: torch.Tensor) -> torch.Tensor:
        """Shrink a training batch to this epoch's size (bilinear, antialiased: area-like)."""
        size = self.train_size(self.current_epoch, x.shape[-1])
        if size == x.shape[-1]:
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)

    def _train_loss(self, logits: torch.Tensor, target: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        from hemacnn.models import l2_penalty

        r = self.recipe
        loss = classification_loss(logits, target, self.class_weight,
                                   r.get("label_smoothing", 0.0), r.get("focal_gamma", 0.0))
        l2 = self.hparams.l2
        return (loss + l2_penalty(self.model, l2) if l2 else loss), loss

    def on_train_epoch_start(self) -> None:
        # Lightning trains the module in the mode it was built in (train) without calling
        # train(), and puts back the modes it found after each validation: set them here.
        self._freeze_batchnorm()
        frozen = self.recipe.get("freeze_backbone_epochs", 0)
        if frozen:  # fine-tuning: the head alone first, then everything
            from hemacnn.models.zoo import set_backbone_trainable

            set_backbone_trainable(self.model, self.current_epoch >= frozen)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def configure_optimizers(self) -> Any:
        o = self.hparams.optimizer
        params = param_groups(self.model, o["lr"], o.get("backbone_lr_mult", 1.0))
        optimizer = make_optimizer(params, o)
        if self.recipe.get("schedule", "none") == "none":
            return optimizer
        sched = make_scheduler(optimizer, self.recipe, self._total_steps(),
                               self.trainer.max_epochs)
        return optimizer if sched is None else {"optimizer": optimizer, "lr_scheduler": sched}

    def _total_steps(self) -> int:
        """Optimizer steps in the whole run, for the schedule.

        Lightning's ``estimated_stepping_batches`` builds the training iterator before a
        checkpoint is restored, so a mid-epoch resume would replay the epoch's first batches;
        on one device the figure comes from the datamodule's loader instead (building a loader
        object iterates nothing). DDP keeps Lightning's figure (its sampler splits the data).
        """
        t = self.trainer
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
