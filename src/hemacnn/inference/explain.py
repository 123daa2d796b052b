"""Class-activation heat maps with pytorch-grad-cam (a maintained library, not our own CAM).

The target layer is the model's last ``nn.Conv2d`` in module order. That rule holds for the
paper's tables (MV1/MV2/MV3: the last 3x3 conv), torchvision's VGG16 (``features[-3]``) and any
CNN a later registry entry adds (ResNets' last block conv, timm's ``conv_head``), so a new
architecture needs no change here. The heat map is computed at the model's input size, then
resized onto the original image, so the overlay shows the cell as the user knows it. Below the
pair, a caption names the explained class, its probability and the method, over the colour
scale of the overlay, so a saved PNG says what it shows.

The map has the target layer's resolution: MV3 at 42 px, MV1 at 134 px and ResNet-18 at 64 px
end in a 2x2 grid (timm's MobileNetV3 at 64 px in 1x1), so the "heat map" is four values
blurred up to the image. We keep the last convolution even then and say so (the
caption, explain's output and the review page add "coarse"): the last layer is the one whose
features the classifier pools, so its map is the evidence for the class; an earlier,
finer layer maps where low-level features fire, is much less class-specific, and would make
the layer shown depend on the input size. A finer map needs a larger ``model.input_size``.

The probability comes from the classifier ``predict`` uses for the same MODEL and
``--precision`` (:func:`hemacnn.inference.classifier.load_classifier`), so the two print the
same number; the heat map's gradients come from the unprepared torch model, in fp32.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
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


COARSE_SIDE = 4
"""A target layer whose map is at most this many cells a side gets the "coarse" caveat."""


def map_grid(model: nn.Module, input_size: int, in_channels: int = 3) -> tuple[int, int]:
    """(h, w) of the target layer's output for an ``input_size`` image: the heat map's grid."""
    seen: list[tuple[int, int]] = []
    handle = target_layer(model).register_forward_hook(
        lambda _m, _i, out: seen.append(tuple(out.shape[-2:])))
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, input_size, input_size, device=device))
    finally:
        handle.remove()
    return seen[-1] if seen else (input_size, input_size)


def coarse_note(grid: tuple[int, int]) -> str:
    """'' for a fine enough map, else the caveat shown with it."""
    if max(grid) > COARSE_SIDE:
        return ""
    return f"coarse: a {grid[0]}x{grid[1]} map, blurred up to the image"


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


def _caption(width: int, title: str, method: str, how: Numerics | None = None,
             note: str = "") -> np.ndarray:
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
    note = f" ({note})" if note else ""
    scale.set_label(f"{method} activation{note}{computed}", fontsize=7, labelpad=1)
    bar.tick_params(labelsize=7, length=2, pad=1)
    canvas.draw()
    strip = np.asarray(canvas.buffer_rgba())[..., :3]
    out = np.full((CAPTION_HEIGHT, width, 3), 255, dtype=np.uint8)  # Agg may round a pixel off
    h, w = min(CAPTION_HEIGHT, strip.shape[0]), min(width, strip.shape[1])
    out[:h, :w] = strip[:h, :w]
    return out


def labelled(original: np.ndarray, heat: np.ndarray, title: str, method: str,
             how: Numerics | None = None, note: str = "") -> np.ndarray:
    """Original beside its overlay, the caption and colour scale below: one RGB array."""
    h, w = original.shape[:2]
    width = max(2 * w, MIN_WIDTH)
    canvas = np.full((h + CAPTION_HEIGHT, width, 3), 255, dtype=np.uint8)
    canvas[:h, :w] = original
    canvas[:h, w:2 * w] = overlay(original, heat)
    canvas[h:] = _caption(width, title, method, how, note)
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


@dataclass(frozen=True)
class HeatMap:
    """One image's heat map: the original as shown, the map, what it explains."""

    original: np.ndarray
    heat: np.ndarray
    code: str
    probability: float
    title: str
    method: str
    how: Numerics
    grid: tuple[int, int]  # the target layer's map, cells a side

    @property
    def note(self) -> str:
        """The caveat for a coarse map, else ''."""
        return coarse_note(self.grid)

    def pair(self) -> Image.Image:
        """Original beside overlay, with the caption and colour scale below."""
        return Image.fromarray(labelled(self.original, self.heat, self.title, self.method,
                                        self.how, self.note))

    def overlay(self) -> Image.Image:
        """The overlay alone, at the original's size (the review page captions it itself)."""
        return Image.fromarray(overlay(self.original, self.heat))


def explain_image(model: nn.Module, card: dict[str, Any], path: str | os.PathLike,
                  method: str = "gradcam", target: str | None = None,
                  classifier: Classifier | None = None) -> tuple[Image.Image, str, float]:
    """Original beside overlay, labelled with class, probability, method and colour scale; with
    the explained class and its probability. An unusable file raises UnreadableImage."""
    hm = heat_map(model, card, path, method, target, classifier)
    return hm.pair(), hm.code, hm.probability


def heat_map(model: nn.Module, card: dict[str, Any], path: str | os.PathLike,
             method: str = "gradcam", target: str | None = None,
             classifier: Classifier | None = None) -> HeatMap:
    """The heat map of one image for its predicted class (or ``target``).

    The probabilities come from ``classifier`` (predict's for this model), else from ``model``
    in fp32; the caption says how they were computed. An unusable file raises UnreadableImage.
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
    grid = map_grid(model, small.shape[0], small.shape[-1])
    return HeatMap(_original(path), heat, classes[idx], float(probs[idx]), title, method, how,
                   grid)


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
    lines, failed, note = [], 0, ""
    for p in paths:
        try:
            hm = heat_map(model, card, p, method, target, classifier)
        except UnreadableImage as exc:
            failed += 1
            lines.append(f"{p}  ERROR  {exc}")
            continue
        dest = out_dir / f"{Path(p).stem}.{method}.png"
        write_bytes(dest, png_bytes(hm.pair()))
        lines.append(f"{p}  {hm.code} {hm.probability:.3f}  wrote {dest}")
        note = note or hm.note and (
            f"note: heat maps are {hm.note}: the last convolution, the layer the classifier "
            f"pools, sees {card['input_size']} px inputs as {hm.grid[0]}x{hm.grid[1]} cells; "
            "a larger model.input_size gives a finer map")
    if failed == len(paths):
        raise HemacnnError(f"no heat map written: all {failed} images failed\n"
                           + "\n".join(lines))
    return [*lines, *([note] if note else []),
            f"probabilities computed with {numerics(classifier)}"]
