"""Read checkpoint files safely: tensors and plain data only, never code.

A ``.ckpt`` is a pickle, and a pickle can call any function while it loads. People share
trained models, so every checkpoint hemacnn opens (predict, evaluate, report, export, serve,
and resume through :class:`hemacnn.training.resume.AtomicCheckpointIO`) goes through
:func:`read_checkpoint`, which uses ``torch.load(weights_only=True)``: PyTorch's restricted
unpickler that builds tensors, numbers, strings, lists, tuples and dicts and refuses anything
else *before* calling it. hemacnn's own checkpoints need nothing more (the model card is
stored as plain dicts and lists, and the RNG state as lists), so the allow-list of extra
types is empty on purpose; a file that needs more is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from hemacnn.errors import HemacnnError

# Extra classes a checkpoint may contain beyond PyTorch's own safe set. Empty: see above.
SAFE_GLOBALS: list[Any] = []

EMA_PREFIX, MODEL_PREFIX = "ema.module.", "model."  # state-dict prefixes of the LightningModule


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, loaded without running code; a clear error else."""
    path = Path(path)
    if path.is_dir():
        raise HemacnnError(f"checkpoint {path} is a folder; give a .ckpt file or a run folder")
    if not path.is_file():
        raise HemacnnError(f"checkpoint {path} not found; give a .ckpt file or a run folder")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an untrusted file can fail in any way
        raise HemacnnError(_why(path, exc)) from None
    if not isinstance(ckpt, dict):
        raise HemacnnError(f"{path} is not a hemacnn checkpoint (it holds a "
                           f"{type(ckpt).__name__}, not a checkpoint dict)")
    return ckpt


def model_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's weights in a training checkpoint's state dict.

    A run trained with ``recipe.ema_decay`` keeps the averaged weights beside the raw ones; the
    averaged ones are what validation selected, so they are what predicts.
    """
    prefix = EMA_PREFIX if any(k.startswith(EMA_PREFIX) for k in state_dict) else MODEL_PREFIX
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def weights_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of the network a checkpoint predicts with (:func:`model_weights`: every tensor's
    name, dtype, shape and bytes, in name order). The optimizer's and the training loop's state
    are left out: a checkpoint saved again with the same network has the same hash."""
    weights = model_weights(read_checkpoint(path).get("state_dict") or {})
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _why(path: Path, exc: Exception) -> str:
    """One line saying why ``path`` could not be loaded as a checkpoint."""
    text = str(exc)
    blocked = re.search(r"unsupported GLOBAL (\S+)|Unsupported global: GLOBAL (\S+)", text)
    if blocked:
        name = next(g for g in blocked.groups() if g)
        return (f"refused to load checkpoint {path}: it asks to create or call {name}, "
                "which is neither a tensor nor plain data, and loading it could run code on "
                "this machine; use a checkpoint written by `hemacnn train`")
    with open(path, "rb") as fh:
        head = fh.read(2)
    if not (zipfile.is_zipfile(path) or head == b"PK" or head[:1] == b"\x80"):
        return (f"{path} is not a checkpoint file (not a PyTorch file at all); give a .ckpt "
                "written by `hemacnn train` or a run folder")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = lines[-2] if len(lines) > 2 and "weights only" in text.lower() else (
        lines[0] if lines else type(exc).__name__)
    detail = detail.split(". ")[0]
    return (f"cannot read checkpoint {path}: the file is damaged or incomplete ({detail[:120]}); "
            "give a .ckpt written by `hemacnn train` or a run folder")
