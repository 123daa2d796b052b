"""Torch models from checkpoints: rebuild a run's (or ensemble's) network with its weights, and
the torch classifier that predicts with it.

Everything that uses a trained torch model goes through here: ``predict``, ``evaluate``,
``export``, ``ensemble``, ``explain`` and ``serve`` import this module, and it imports none of
them (an import-linter contract in ``.importlinter`` holds the layers; a test runs it). The
model card is :mod:`hemacnn.card`, the run folder :class:`hemacnn.rundir.RunDir`, ONNX models
:mod:`hemacnn.inference.onnxmodel`, and :func:`hemacnn.inference.classifier.load_classifier` picks
the classifier
for any MODEL argument.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from hemacnn.card import parse_card, read_card
from hemacnn.data.colour import normalize_for_card
from hemacnn.errors import HemacnnError
from hemacnn.inference.checkpoint import model_weights, read_checkpoint
from hemacnn.inference.engine import array_batches, predict_batches, prepare_model
from hemacnn.inference.runcard import check_run_card
from hemacnn.models import build_model
from hemacnn.models.batchnorm import ADAPT_MAX_BATCHES, adapt_batchnorm
from hemacnn.rundir import RunDir, find_checkpoint

__all__ = ["Classifier", "EnsembleModel", "TorchClassifier", "default_device",
           "is_ensemble", "load_checkpoint", "load_ensemble", "predict_arrays", "read_ensemble"]

ENSEMBLE_FORMAT = "hemacnn-ensemble/1"


# --------------------------------------------------------------------------- torch models


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _build_loaded(arch: dict[str, Any], weights: dict[str, torch.Tensor]) -> nn.Module:
    """The card's model holding ``weights``, built without its random initialisation.

    Built on the meta device, the initialisers (a truncated normal over a dense layer of
    ~5,000 inputs is most of a one-image ``predict``'s own time) cost nothing; the weights are
    then assigned. A model with state that the weights do not hold (a non-persistent buffer)
    is built on the CPU as usual instead.
    """
    def build() -> nn.Module:
        return build_model(arch["name"], arch["num_classes"], arch["input_size"],
                           options=arch.get("options") or {})

    with torch.device("meta"):
        model = build()
    model.load_state_dict(weights, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = build()
        model.load_state_dict(weights)
    return model


def load_checkpoint(path: str | os.PathLike, device: str | torch.device | None = None,
                    prepare: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a checkpoint's model (file, run folder or ensemble) in eval mode, with its card.

    With ``prepare`` (the default) the model is made ready for fast inference
    (:func:`hemacnn.inference.engine.prepare_model`); ``prepare=False`` keeps the trained module as
    it is (for export and heat maps, which need the original layers).
    """
    ckpt_path = find_checkpoint(path)
    if ckpt_path.name == RunDir.ENSEMBLE:
        return load_ensemble(ckpt_path, device, prepare=prepare)
    ckpt = read_checkpoint(ckpt_path)
    card = parse_card((ckpt.get("hyper_parameters") or {}).get("card"), ckpt_path)
    if Path(path).is_dir():
        check_run_card(path, card, ckpt_path)  # before anything is built or written
    arch = card["arch"]
    weights = model_weights(ckpt.get("state_dict") or {})
    try:
        model = _build_loaded(arch, weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise HemacnnError(f"weights in {ckpt_path} do not fit the model its card describes "
                           f"({first})") from None
    dev = torch.device(device) if device else default_device()
    model = model.to(dev).eval()
    if prepare:
        model = prepare_model(model, int(card["input_size"]))
    return model, card


# --------------------------------------------------------------------------- ensembles


class EnsembleModel(nn.Module):
    """Weighted mean of member probabilities, returned as log-probabilities.

    Log-probabilities, so that softmax (what every inference path applies to a model's output)
    gives back exactly the weighted mean, and the module exports and explains like any model.
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float],
                 orders: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(list(weights), dtype=torch.float32))
        for i, order in enumerate(orders):  # member i's column for each ensemble class
            self.register_buffer(f"order{i}", torch.tensor(list(order), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for i, member in enumerate(self.members):
            p = torch.softmax(member(x).float(), dim=1)[:, getattr(self, f"order{i}")]
            p = p * self.weights[i]
            total = p if total is None else total + p
        return torch.log(total.clamp_min(1e-12))


def is_ensemble(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ensemble folder or its ``ensemble.json``."""
    path = Path(path)
    return RunDir(path).is_ensemble if path.is_dir() else path.name == RunDir.ENSEMBLE


def read_ensemble(path: str | os.PathLike) -> dict[str, Any]:
    """The ensemble description with member run folders resolved to paths."""
    path = Path(path)
    spec_path = RunDir(path).ensemble if path.is_dir() else path
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        members = spec["members"]
        for m in members:
            run = Path(m["run"])
            m["path"] = run if run.is_absolute() else (spec_path.parent / run)
            m["weight"] = float(m["weight"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HemacnnError(f"{spec_path} is not a valid ensemble file ({exc}); write it again "
                           "with `hemacnn ensemble`") from None
    if spec.get("format") != ENSEMBLE_FORMAT or not members:
        raise HemacnnError(f"{spec_path} is not a hemacnn ensemble file; write it again with "
                           "`hemacnn ensemble`")
    return spec


def load_ensemble(path: str | os.PathLike, device: str | torch.device | None = None,
                  **load_kw: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Load every member (as :func:`load_checkpoint` does) into one :class:`EnsembleModel`."""
    spec = read_ensemble(path)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    card = read_card(folder)
    members, orders = [], []
    for m in spec["members"]:
        if not Path(m["path"]).is_dir():
            raise HemacnnError(f"member run {m['path']} of ensemble {folder} not found; the "
                               "ensemble folder refers to its members, keep them beside it")
        model, mcard = load_checkpoint(m["path"], device, **load_kw)
        if sorted(mcard["classes"]) != sorted(card["classes"]):
            raise HemacnnError(f"member {m['path']} has classes {', '.join(mcard['classes'])}, "
                               f"the ensemble {', '.join(card['classes'])}")
        members.append(model)
        orders.append([mcard["classes"].index(c) for c in card["classes"]])
    model = EnsembleModel(members, [m["weight"] for m in spec["members"]], orders)
    model.hemacnn_arch = card["arch"]
    dev = next(members[0].parameters()).device
    return model.to(dev).eval(), card


# --------------------------------------------------------------------------- classifiers


class Classifier(Protocol):
    """What every inference path needs of a model: its card and class probabilities."""

    card: dict[str, Any]
    source: str

    def probs(self, images: np.ndarray, batch_size: int = 64,
              tta: bool = False) -> np.ndarray:
        """Softmax probabilities (N, C) for uint8 RGB images (N, H, W, 3)."""
        ...

    def batch_probs(self, batches: Iterable[Any], tta: bool = False) -> np.ndarray:
        """Softmax probabilities (N, C) for float NCHW batches in [0, 1], stain-normalised."""
        ...


def predict_arrays(model: nn.Module, images: np.ndarray, batch_size: int = 64,
                   tta: bool = False, precision: str = "fp32") -> np.ndarray:
    """Softmax probabilities (N, C) for uint8 images (N, H, W, 3) scaled to [0, 1]."""
    return predict_batches(model, array_batches(images, batch_size), tta=tta,
                           precision=precision)


class TorchClassifier:
    """A checkpoint's (or ensemble's) model on the fast path (:mod:`hemacnn.inference.engine`).

    With ``adapt_bn`` the model waits, unfolded, for :meth:`adapt` (test-time BatchNorm
    adaptation on the images to classify) before it is prepared for fast inference.
    """

    def __init__(self, path: str | os.PathLike, precision: str = "fp32", adapt_bn: bool = False):
        self.model, self.card = load_checkpoint(path, prepare=not adapt_bn)
        self.source, self.precision = str(find_checkpoint(path)), precision
        self.adapt_bn, self.adapted = adapt_bn, None

    def adapt(self, images: Iterable[np.ndarray], batch_size: int = 64) -> None:
        """Re-estimate BatchNorm statistics on uint8 NHWC image batches (labels unneeded)."""
        def batches() -> Iterator[torch.Tensor]:
            for chunk in images:
                yield from array_batches(normalize_for_card(chunk, self.card), batch_size)

        device = next(self.model.parameters()).device
        self.adapted = adapt_batchnorm(self.model, (x.to(device) for x in batches()),
                                       ADAPT_MAX_BATCHES)
        self.model = prepare_model(self.model, int(self.card["input_size"]))

    def probs(self, images: np.ndarray, batch_size: int = 64, tta: bool = False) -> np.ndarray:
        """Softmax probabilities (N, C) (stain-normalised first when the card says so)."""
        if self.adapt_bn and self.adapted is None:
            raise HemacnnError("test-time BatchNorm adaptation: adapt() on the images first")
        return predict_arrays(self.model, normalize_for_card(images, self.card), batch_size,
                              tta=tta, precision=self.precision)

    def batch_probs(self, batches: Iterable[torch.Tensor], tta: bool = False) -> np.ndarray:
        """Softmax probabilities (N, C) for float NCHW batches in [0, 1], stain-normalised
        already (a data loader's batches)."""
        return predict_batches(self.model, batches, tta=tta, precision=self.precision)
