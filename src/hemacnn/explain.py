"""Class-activation heat maps with pytorch-grad-cam (a maintained library, not our own CAM).

The target layer is the model's last ``nn.Conv2d`` in module order. That rule holds for the
paper's tables (MV1/MV2/MV3: the last 3x3 conv), torchvision's VGG16 (``features[-3]``) and any
CNN a later registry entry adds (ResNets' last block conv, timm's ``conv_head``), so a new
architecture needs no change here. The heat map is computed at the model's input size, then
resized onto the original image, so the overlay shows the cell as the user knows it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from hemacnn.errors import HemacnnError

METHODS = {  # CLI name -> pytorch_grad_cam class name
    "gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM", "layercam": "LayerCAM", "eigencam": "EigenCAM",
    "scorecam": "ScoreCAM",
}


def target_layer(model: nn.Module) -> nn.Module:
    """The last convolution of ``model`` (module order): the usual Grad-CAM target."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise HemacnnError(f"{type(model).__name__} has no convolution to explain")
    return convs[-1]


def class_activation(model: nn.Module, images: np.ndarray, targets: Sequence[int],
                     method: str = "gradcam") -> np.ndarray:
    """Heat maps (N, H, W) in [0, 1] for uint8 images (N, H, W, 3) and class indices."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in METHODS:
        raise HemacnnError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    cam_class = getattr(pytorch_grad_cam, METHODS[method])
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(np.require(images, requirements="CW")).permute(0, 3, 1, 2).float() / 255
    with cam_class(model=model, target_layers=[target_layer(model)]) as cam:
        maps = cam(input_tensor=x.to(device),
                   targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return np.nan_to_num(np.asarray(maps, dtype=np.float32))


def overlay(original: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``heat`` (h, w) in [0, 1] resized onto ``original`` (H, W, 3) uint8 as a jet overlay."""
    from matplotlib import colormaps

    h, w = original.shape[:2]
    heat_img = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8))
    heat_big = np.asarray(heat_img.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255
    colour = colormaps["jet"](heat_big)[..., :3] * 255
    return (alpha * colour + (1 - alpha) * original.astype(np.float32)).clip(0, 255).astype(
        np.uint8)


def explain_image(model: nn.Module, card: dict[str, Any], path: str | os.PathLike,
                  method: str = "gradcam", target: str | None = None
                  ) -> tuple[Image.Image, str, float]:
    """Original beside overlay as one image, with the explained class and its probability."""
    from hemacnn.data.cache import preprocess_image
    from hemacnn.data.images import load_rgb
    from hemacnn.loading import predict_arrays

    classes = list(card["classes"])
    if target is not None and target not in classes:
        raise HemacnnError(f"--target {target} is not one of the model's classes "
                           f"({', '.join(classes)})")
    small = preprocess_image(path, int(card["input_size"]), card.get("resize_method", "nearest"))
    probs = predict_arrays(model, small[None], precision="fp32")[0]
    idx = classes.index(target) if target else int(probs.argmax())
    heat = class_activation(model, small[None], [idx], method)[0]
    original = load_rgb(path)
    pair = np.concatenate([original, overlay(original, heat)], axis=1)
    return Image.fromarray(pair), classes[idx], float(probs[idx])


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def explain_files(model_path: str | os.PathLike, paths: Sequence[str | os.PathLike],
                  out: str | os.PathLike = "explain", method: str = "gradcam",
                  target: str | None = None) -> list[str]:
    """Write ``OUT/<stem>.<method>.png`` (original | overlay) per image; one line per file."""
    from hemacnn.atomic import ensure_writable_dir, write_bytes
    from hemacnn.loading import load_checkpoint

    if Path(model_path).suffix.lower() == ".onnx":
        raise HemacnnError("heat maps need the PyTorch model (gradients); give the run folder "
                           "or .ckpt, not the .onnx export")
    model, card = load_checkpoint(model_path, device="cpu", prepare=False)
    out_dir = ensure_writable_dir(Path(out))
    lines, failed = [], 0
    for p in paths:
        try:
            image, code, prob = explain_image(model, card, p, method, target)
        except HemacnnError as exc:
            if "--target" in str(exc) or "unknown method" in str(exc):
                raise
            failed += 1
            lines.append(f"{p}  ERROR  {exc}")
            continue
        dest = out_dir / f"{Path(p).stem}.{method}.png"
        write_bytes(dest, png_bytes(image))
        lines.append(f"{p}  {code} {prob:.3f}  wrote {dest}")
    if failed == len(paths):
        raise HemacnnError(f"no heat map written: all {failed} images failed\n"
                           + "\n".join(lines))
    return lines
