"""Inference from a checkpoint alone (nanoGPT style: the file describes its own model).

The Lightning checkpoint carries the model card under ``hyper_parameters.card``; its ``arch``
entry is all :func:`hemacnn.models.build_model` needs, and its input size and resize method
select the same deterministic preprocessing as training (:func:`preprocess_image`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hemacnn.errors import HemacnnError

CARD_FORMAT = "hemacnn-card/1"


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file for ``path``: the file itself, or a run's best (else last) one."""
    path = Path(path)
    if path.is_dir():
        if (path / "ensemble.json").is_file():  # an ensemble folder (hemacnn.ensemble)
            return path / "ensemble.json"
        for name in ("best.ckpt", "last.ckpt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise HemacnnError(f"{path} has no checkpoints/best.ckpt or checkpoints/last.ckpt; "
                           "give a finished run folder or a .ckpt file")
    if not path.is_file():
        raise HemacnnError(f"checkpoint {path} not found; give a .ckpt file or a run folder")
    return path


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device | None = None
                    ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a checkpoint's model (file or run folder) in eval mode; return it and its card."""
    from hemacnn.models import build_model

    ckpt_path = find_checkpoint(path)
    if ckpt_path.name == "ensemble.json":
        from hemacnn.ensemble import load_ensemble

        return load_ensemble(ckpt_path, device)
    try:
        # Our own Lightning checkpoints hold plain Python objects besides tensors.
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise HemacnnError(f"cannot read checkpoint {ckpt_path}: {exc}") from None
    card = (ckpt.get("hyper_parameters") or {}).get("card") if isinstance(ckpt, dict) else None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT or "arch" not in card:
        raise HemacnnError(f"{ckpt_path} is not a hemacnn checkpoint (no model card); "
                           "train with `hemacnn train`")
    arch = card["arch"]
    model = build_model(arch["name"], arch["num_classes"], arch["input_size"],
                        options=arch.get("options") or {})
    # A run trained with recipe.ema_decay keeps the averaged weights beside the raw ones; the
    # averaged ones are what validation selected, so they are what predicts.
    prefix = "ema.module." if any(k.startswith("ema.module.") for k in ckpt["state_dict"]) \
        else "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise HemacnnError(f"weights in {ckpt_path} do not fit the model its card describes "
                           f"({first})") from None
    model.to(torch.device(device) if device else default_device()).eval()
    return model, card


@torch.no_grad()
def predict_batches(model: torch.nn.Module, batches: Iterable[torch.Tensor],
                    tta: bool = False) -> np.ndarray:
    """Softmax probabilities (N, C) for float NCHW batches in [0, 1], in eval mode and fp32.

    With ``tta`` the probabilities are averaged over the 8 dihedral transforms.
    """
    from hemacnn.data.augment import dihedral, dihedral_transforms

    model.eval()
    device = next(model.parameters()).device
    ks = dihedral_transforms() if tta else [0]
    out = []
    for x in batches:
        x = x.to(device)
        probs = sum(torch.softmax(model(dihedral(x, k).contiguous()).float(), dim=1)
                    for k in ks) / len(ks)
        out.append(probs.cpu().numpy())
    if not out:
        n_classes = getattr(model, "hemacnn_arch", {}).get("num_classes", 0)
        return np.zeros((0, n_classes), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def predict_arrays(model: torch.nn.Module, images: np.ndarray, batch_size: int = 64,
                   tta: bool = False) -> np.ndarray:
    """Softmax probabilities (N, C) for uint8 images (N, H, W, 3) scaled to [0, 1]."""
    batches = (torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
               .permute(0, 3, 1, 2).float().div_(255.0)
               for start in range(0, len(images), batch_size))
    return predict_batches(model, batches, tta=tta)


def load_images(paths: Sequence[str | os.PathLike], card: dict[str, Any]
                ) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Preprocess files as the card says: (images, indices that loaded, (path, error) pairs)."""
    from hemacnn.data.cache import preprocess_image

    size, method = int(card["input_size"]), card.get("resize_method", "nearest")
    arrays, ok, errors = [], [], []
    for i, p in enumerate(paths):
        try:
            arrays.append(preprocess_image(p, size, method))
            ok.append(i)
        except HemacnnError as exc:
            errors.append((str(p), str(exc)))
    images = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), dtype=np.uint8)
    return images, ok, errors


def predict_files(checkpoint: str | os.PathLike, paths: Sequence[str | os.PathLike],
                  tta: bool = False) -> list[dict[str, Any]]:
    """Classify image files; an unreadable file gives an ``error`` entry, not a crash."""
    model, card = load_checkpoint(checkpoint)
    images, ok, errors = load_images(paths, card)
    probs = predict_arrays(model, images, tta=tta)
    classes, names = card["classes"], card.get("class_names") or card["classes"]
    results: list[dict[str, Any]] = [{} for _ in paths]
    for row, i in enumerate(ok):
        best = int(probs[row].argmax())
        results[i] = {"path": str(paths[i]), "code": classes[best], "name": names[best],
                      "probability": float(probs[row, best]),
                      "probs": {c: float(v) for c, v in zip(classes, probs[row], strict=True)}}
    bad = iter(errors)
    for i, r in enumerate(results):
        if not r:
            path, err = next(bad)
            results[i] = {"path": path, "error": err}
        else:
            warning = _pixel_warning(paths[i])
            if warning:
                r["warning"] = warning
    return results


def _pixel_warning(path: str | os.PathLike) -> str | None:
    """The scan's verdict on a file's pixels: a damaged image still gets a (doubtful) label."""
    from hemacnn.data.scan import check_file

    path = Path(path)
    _, _, _, found = check_file(str(path.parent), path.name)
    details = [detail for status, detail in found if status == "suspicious"]
    return f"suspicious: {details[0]}" if details else None


def format_predictions(preds: list[dict[str, Any]]) -> str:
    """One line per file: predicted code, name and probability, or the error."""
    lines = []
    width = max((len(p["path"]) for p in preds), default=4)
    for p in preds:
        if "error" in p:
            lines.append(f"{p['path']:<{width}}  ERROR  {p['error']}")
        else:
            lines.append(f"{p['path']:<{width}}  {p['code']}  {p['probability']:.3f}  "
                         f"{p['name']}")
            if "warning" in p:
                lines.append(f"{'':<{width}}  WARNING  {p['warning']}")
    return "\n".join(lines)
