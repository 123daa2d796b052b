"""A model exported to ONNX (``hemacnn export``), run by ONNX Runtime: no torch.

:class:`OnnxClassifier` predicts from a ``.onnx`` file. A run folder whose default export
(``RUN/export/model.onnx``) was made from the checkpoint the run predicts with now is "fresh"
(:func:`fresh_export`): :func:`hemacnn.inference.classifier.load_classifier` then predicts
through it, which spares the ~3.5 s of ``import torch`` on a 2-core CPU and runs the network
~2x faster there (ONNX Runtime fuses convolution, BatchNorm and ReLU). The export records its
checkpoint file's name, size and modification time and the SHA-256 of the network weights in it
(:func:`checkpoint_source`). An untouched file is fresh at the cost of one ``stat``; a file
written again is hashed (its weights only, not the optimizer state): the same weights stay
fresh, a retrained, resumed or replaced checkpoint no longer matches and the run predicts from
the checkpoint again.

An export is only used in the checkpoint's place when it passed the parity check
:func:`hemacnn.inference.export.export_model` makes (ONNX Runtime's probabilities within
:data:`PARITY_ATOL` of torch's fp32 on a probe batch, recorded in its card): an fp32 path that
disagrees with fp32 torch is refused, and an export made before the check is not trusted (export
it again).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.card import ONNX_CARD_KEY, parse_card
from hemacnn.data.colour import normalize_for_card
from hemacnn.errors import HemacnnError
from hemacnn.rundir import RunDir, find_checkpoint

PARITY_ATOL = 1e-4  # fp32 paths: the largest probability difference from fp32 torch accepted
SOURCE_KEY = "source_checkpoint"  # the card entry of an export that names its checkpoint
EXPORT_DIR = "export"             # a run's default export folder (``hemacnn export RUN``)
GPU_DEVICES = ("/dev/nvidiactl", "/dev/kfd")  # NVIDIA's and ROCm's device nodes


def _weights_sha256(ckpt: Path) -> str:
    # lazy: torch, ~3.5 s of start-up on 2 cores; only an export, or a checkpoint written again
    # since its export, is hashed
    from hemacnn.inference.checkpoint import weights_sha256

    return weights_sha256(ckpt)


def checkpoint_source(ckpt: str | os.PathLike) -> dict[str, Any]:
    """What identifies a checkpoint's network: the file's name, size and modification time (the
    cheap check that it is untouched) and the SHA-256 of the weights it predicts with."""
    ckpt = Path(ckpt)
    stat = ckpt.stat()
    return {"file": ckpt.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "weights_sha256": _weights_sha256(ckpt)}


def run_export(path: str | os.PathLike) -> Path:
    """Where ``hemacnn export RUN`` writes the run's ONNX file by default."""
    return Path(path) / EXPORT_DIR / "model.onnx"


def _gpu_without_onnx_cuda() -> bool:
    """A GPU is present but ONNX Runtime cannot use it: torch on the GPU is the faster path."""
    if not any(Path(p).exists() for p in GPU_DEVICES):
        return False
    import onnxruntime as ort  # lazy: ~190 ms (importtime), only on a machine with a GPU

    return "CUDAExecutionProvider" not in ort.get_available_providers()


def fresh_export(path: str | os.PathLike) -> Path | None:
    """The ONNX file that predicts exactly as run folder ``path``'s checkpoint does, or None:
    the run's default export, made from the network in the checkpoint :func:`find_checkpoint`
    picks now (that very file untouched, or one holding the same weights), on a machine where
    ONNX Runtime is the faster path."""
    path = Path(path)
    onnx = run_export(path)
    card_file = onnx.parent / RunDir.CARD
    if not (path.is_dir() and onnx.is_file() and card_file.is_file()):
        return None
    if RunDir(path).is_ensemble:
        return None
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
        if not parity_passed(card):
            return None
        source = card.get(SOURCE_KEY) or {}
        ckpt = find_checkpoint(path)
        stat = ckpt.stat()
        untouched = (source.get("file"), source.get("bytes"), source.get("mtime_ns")) == (
            ckpt.name, stat.st_size, stat.st_mtime_ns)
        if not untouched and _weights_sha256(ckpt) != source.get("weights_sha256"):
            return None
    except (OSError, ValueError, HemacnnError):  # (an unreadable checkpoint: not fresh)
        return None
    return None if _gpu_without_onnx_cuda() else onnx


def parity_passed(card: dict[str, Any]) -> bool:
    """Whether an export's card records a passed parity check with fp32 torch."""
    parity = (card.get("onnx") or {}).get("parity") or {}
    diff = parity.get("max_abs_prob_diff")
    return isinstance(diff, (int, float)) and 0 <= diff <= PARITY_ATOL


def onnx_card(path: Path, session: Any) -> dict[str, Any]:
    """The model card stored in an ONNX file's metadata, else ``model_card.json`` beside it."""
    meta = session.get_modelmeta().custom_metadata_map
    if ONNX_CARD_KEY in meta:
        return parse_card(json.loads(meta[ONNX_CARD_KEY]), path)
    beside = path.parent / RunDir.CARD
    if beside.is_file():
        return parse_card(json.loads(beside.read_text(encoding="utf-8")), path)
    raise HemacnnError(f"{path} carries no hemacnn model card (no metadata and no "
                       f"{RunDir.CARD} beside it); export it with `hemacnn export`")


class OnnxClassifier:
    """An exported model run by ONNX Runtime: ``probs(images)`` for uint8 NHWC arrays."""

    def __init__(self, path: str | os.PathLike):
        import onnxruntime as ort  # lazy: ~190 ms (importtime, under load), ONNX only

        path = Path(path)
        if not path.is_file():
            raise HemacnnError(f"ONNX model {path} not found; export one with "
                               "`hemacnn export RUN --format onnx`")
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        try:
            options = ort.SessionOptions()  # every graph optimisation (Conv+ReLU fusion etc.)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own error types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise HemacnnError(f"cannot load ONNX model {path}: {first[:200]}") from None
        self.card, self.source = onnx_card(path, self.session), str(path)
        self.input = self.session.get_inputs()[0].name

    def probs(self, images: np.ndarray, batch_size: int = 64, tta: bool = False) -> np.ndarray:
        """Softmax probabilities (N, C), fp32, optionally averaged over the 8 dihedral views."""
        # Stain normalisation is not in the graph (torchstain's per-image ops do not export):
        # the card's reference is applied here, before the session.
        images = normalize_for_card(images, self.card)
        return self.batch_probs((images[start:start + batch_size].astype(np.float32)
                                 .transpose(0, 3, 1, 2) / 255
                                 for start in range(0, len(images), batch_size)), tta=tta)

    def batch_probs(self, batches: Iterable[Any], tta: bool = False) -> np.ndarray:
        """Softmax probabilities (N, C) for float NCHW batches in [0, 1] (numpy arrays or CPU
        tensors, stain-normalised already): the input the network takes, as a data loader
        gives it."""
        ks = range(8) if tta else [0]
        out = []
        for x in batches:
            x = np.asarray(x, dtype=np.float32)
            total = 0.0
            for k in ks:
                xk = np.rot90(x, k % 4, axes=(2, 3))
                xk = np.ascontiguousarray(xk[..., ::-1] if k >= 4 else xk)
                logits = self.session.run(None, {self.input: xk})[0].astype(np.float64)
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                total = total + e / e.sum(axis=1, keepdims=True)
            out.append((total / len(ks)).astype(np.float32))
        if not out:
            return np.zeros((0, len(self.card["classes"])), dtype=np.float32)
        return np.concatenate(out)
