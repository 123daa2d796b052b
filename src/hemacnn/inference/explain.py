"""Class-activation heat maps with pytorch-grad-cam (a maintained library, not our own CAM).

The target layer is the model's last ``nn.Conv2d`` in module order. That rule holds for the
paper's tables (MV1/MV2/MV3: the last 3x3 conv), torchvision's VGG16 (``features[-3]``) and any
CNN a later registry entry adds (ResNets' last block conv, timm's ``conv_head``), so a new
architecture needs no change here. The heat map is computed at the model's input size, then
resized onto the original image, so the overlay shows the cell as the user knows it. Below the
pair, a caption names the explained class, its probability and the method, over the colour
scale of the overlay, so a saved PNG says what it shows.

The probability comes from the classifier ``predict`` uses for the same MODEL and
``--precision`` (:func:`hemacnn.inference.classifier.load_classifier`), so the two print the
same number; the heat map's gradients come from the unprepared torch model, in fp32.
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

from hemacnn.atomic import ensure_writable_dir, write_bytes
from hemacnn.data.colour import normalize_for_card
from hemacnn.data.images import ImageDecodeError, load_images, load_rgb
from hemacnn.errors import HemacnnError, UnreadableImage
from hemacnn.inference.classifier import Numerics, load_classifier, numerics
from hemacnn.inference.loading import Classifier, load_checkpoint, predict_arrays

METHODS = {  # CLI name -> pytorch_grad_cam class name
    "gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM", "layercam": "LayerCAM", "eigencam": "EigenCAM",
    "scorecam": "ScoreCAM",
}


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise HemacnnError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def target_layer(model: nn.Module) -> nn.Module:
    """The last convolution of ``model`` (module order): the usual Grad-CAM target."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise HemacnnError(f"{type(model).__name__} has no convolution to explain")
    return convs[-1]


def class_activation(model: nn.Module, images: np.ndarray, targets: Sequence[int],
                     method: str = "gradcam") -> np.ndarray:
    """Heat maps (N, H, W) in [0, 1] for uint8 images (N, H, W, 3) and class indices."""
    # lazy: grad-cam ~5.8 s, matplotlib ~0.6 s (importtime, measured under load); serve imports
    # this module at start and draws heat maps only when asked
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    _check_method(method)
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
    from matplotlib import colormaps  # lazy: ~310 ms, see class_activation

    h, w = original.shape[:2]
    heat_img = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8))
    heat_big = np.asarray(heat_img.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255
    colour = colormaps["jet"](heat_big)[..., :3] * 255
    return (alpha * colour + (1 - alpha) * original.astype(np.float32)).clip(0, 255).astype(
        np.uint8)


SHOWN_SIDE = 1024
"""Pixels: a larger original is shown reduced (a 12,000 px frame would take gigabytes)."""

MIN_WIDTH = 480
"""Pixels: small cells still get a caption and colour scale wide enough to read."""

CAPTION_HEIGHT = 76


def _caption(width: int, title: str, method: str, how: Numerics | None = None) -> np.ndarray:
    """A white strip ``width`` px wide: the title line, then the colour scale of the overlay."""
    # lazy: matplotlib.figure ~580 ms, see class_activation
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, CAPTION_HEIGHT / 100), dpi=100, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    fig.text(8 / width, 0.93, title, ha="left", va="top", fontsize=9)
    margin = 36 / width  # room for the end labels of the scale
    bar = fig.add_axes((margin, 0.42, 1 - 2 * margin, 0.16))
    scale = fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), cax=bar,
                         orientation="horizontal")
    scale.set_ticks([0, 0.5, 1], labels=["0 low", "0.5", "1 high"])
    computed = (f" · probability: {how.precision}, {how.backend}, {how.device}"
                if how is not None else "")
    scale.set_label(f"{method} activation{computed}", fontsize=7, labelpad=1)
    bar.tick_params(labelsize=7, length=2, pad=1)
    canvas.draw()
    strip = np.asarray(canvas.buffer_rgba())[..., :3]
    out = np.full((CAPTION_HEIGHT, width, 3), 255, dtype=np.uint8)  # Agg may round a pixel off
    h, w = min(CAPTION_HEIGHT, strip.shape[0]), min(width, strip.shape[1])
    out[:h, :w] = strip[:h, :w]
    return out


def labelled(original: np.ndarray, heat: np.ndarray, title: str, method: str,
             how: Numerics | None = None) -> np.ndarray:
    """Original beside its overlay, the caption and colour scale below: one RGB array."""
    h, w = original.shape[:2]
    width = max(2 * w, MIN_WIDTH)
    canvas = np.full((h + CAPTION_HEIGHT, width, 3), 255, dtype=np.uint8)
    canvas[:h, :w] = original
    canvas[:h, w:2 * w] = overlay(original, heat)
    canvas[h:] = _caption(width, title, method, how)
    return canvas


def _original(path: str | os.PathLike) -> np.ndarray:
    """The file as the user sees it (reduced when huge), or UnreadableImage."""
    try:
        original = load_rgb(path)
    except ImageDecodeError as exc:
        raise UnreadableImage(path, str(exc)) from None
    if max(original.shape[:2]) > SHOWN_SIDE:
        img = Image.fromarray(original)
        img.thumbnail((SHOWN_SIDE, SHOWN_SIDE), Image.BILINEAR)
        original = np.asarray(img)
    return original


def _check_target(target: str | None, classes: Sequence[str]) -> None:
    if target is not None and target not in classes:
        raise HemacnnError(f"--target {target} is not one of the model's classes "
                           f"({', '.join(classes)})")


def explain_image(model: nn.Module, card: dict[str, Any], path: str | os.PathLike,
                  method: str = "gradcam", target: str | None = None,
                  classifier: Classifier | None = None) -> tuple[Image.Image, str, float]:
    """Original beside overlay, labelled with class, probability, method and colour scale; with
    the explained class and its probability. An unusable file raises UnreadableImage.

    The probabilities come from ``classifier`` (predict's for this model), else from ``model``
    in fp32; the caption says how they were computed.
    """
    classes = list(card["classes"])
    names = list(card.get("class_names") or classes)
    _check_target(target, classes)
    _check_method(method)
    images, _, errors = load_images([path], card)
    if errors:  # the reason in explain's one-line form (cannot read image PATH: why; ...)
        raise UnreadableImage(errors[0].path, errors[0].reason)
    small = normalize_for_card(images, card)[0]  # what the model sees (stain reference)
    if classifier is not None:
        probs, how = classifier.probs(images)[0], numerics(classifier)  # (normalises inside)
    else:
        probs, how = predict_arrays(model, small[None], precision="fp32")[0], numerics(model)
    best = int(probs.argmax())
    idx = classes.index(target) if target else best
    heat = class_activation(model, small[None], [idx], method)[0]
    title = f"{classes[idx]} {names[idx]}: probability {probs[idx]:.3f}"
    title += (" (predicted class)" if idx == best
              else f" (explained; predicted {classes[best]} {probs[best]:.3f})")
    pair = labelled(_original(path), heat, title, method, how)
    return Image.fromarray(pair), classes[idx], float(probs[idx])


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def explain_files(model_path: str | os.PathLike, paths: Sequence[str | os.PathLike],
                  out: str | os.PathLike = "explain", method: str = "gradcam",
                  target: str | None = None, precision: str = "fp32") -> list[str]:
    """Write ``OUT/<stem>.<method>.png`` (original | overlay, caption) per image; one line per
    file, an unusable file's line saying why, and a last line saying how the probabilities
    were computed (by predict's classifier at ``precision``: the same numbers)."""
    if Path(model_path).suffix.lower() == ".onnx":
        raise HemacnnError("heat maps need the PyTorch model (gradients); give the run folder "
                           "or .ckpt, not the .onnx export")
    _check_method(method)
    model, card = load_checkpoint(model_path, device="cpu", prepare=False)
    _check_target(target, card["classes"])  # whole-command mistakes stop before any file
    classifier = load_classifier(model_path, precision=precision)
    out_dir = ensure_writable_dir(Path(out))
    lines, failed = [], 0
    for p in paths:
        try:
            image, code, prob = explain_image(model, card, p, method, target, classifier)
        except UnreadableImage as exc:
            failed += 1
            lines.append(f"{p}  ERROR  {exc}")
            continue
        dest = out_dir / f"{Path(p).stem}.{method}.png"
        write_bytes(dest, png_bytes(image))
        lines.append(f"{p}  {code} {prob:.3f}  wrote {dest}")
    if failed == len(paths):
        raise HemacnnError(f"no heat map written: all {failed} images failed\n"
                           + "\n".join(lines))
    return [*lines, f"probabilities computed with {numerics(classifier)}"]
