"""Image files in: strict decoding for the scan, and the one preprocessing the model sees.

Pillow is made strict here (truncated files raise instead of being padded with grey), and only
the exceptions its decoders raise are caught, so a bug in our own code is never mistaken for a
bad file. :func:`decode_bytes` decodes a file fully and names every problem (the scan, the
server's upload check); :func:`preprocess_image` is the deterministic decode-and-resize shared
by training (through the image cache), evaluation and prediction, and :func:`load_images` is
the one path from file names and a model card to the model's input.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from hemacnn.data.corruption import jpeg_quant_step
from hemacnn.errors import HemacnnError, UnreadableImage

# A truncated JPEG must fail loudly; Pillow's lenient mode would hand back grey-filled pixels.
ImageFile.LOAD_TRUNCATED_IMAGES = False

FORMATS_BY_EXTENSION: dict[str, frozenset[str]] = {
    ".jpg": frozenset({"JPEG", "MPO"}),  # MPO: camera JPEGs carrying extra frames
    ".jpeg": frozenset({"JPEG", "MPO"}),
    ".png": frozenset({"PNG"}),
    ".tif": frozenset({"TIFF"}),
    ".tiff": frozenset({"TIFF"}),
    ".bmp": frozenset({"BMP", "DIB"}),
}
"""Image file extensions the scan picks up (any case) and the formats their content may have."""

_EXTENSION_FOR_FORMAT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "TIFF": ".tif",
                         "BMP": ".bmp", "DIB": ".bmp", "GIF": ".gif", "WEBP": ".webp"}

DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes PIL.UnidentifiedImageError and "image file is truncated"
    SyntaxError,  # raised by several Pillow parsers for malformed headers
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)
"""What Pillow's decoders raise on bad files; nothing broader is ever caught."""

EMPTY_FILE = "empty file (0 bytes)"
"""Why a file of no bytes is no image, in the same words everywhere (scan, predict, serve)."""

_MODE_NAMES = {
    "1": "1-bit black and white", "L": "grayscale", "P": "palette", "LA": "grayscale with alpha",
    "PA": "palette with alpha", "RGBA": "RGBA", "RGBa": "RGBA", "CMYK": "CMYK",
    "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV", "I": "32-bit integer grayscale",
    "F": "32-bit float grayscale",
}


class ImageDecodeError(Exception):
    """A file that cannot be used as an image; the message says why in a few words."""


@dataclass
class DecodedImage:
    """A fully decoded picture in RGB, with what had to be done to get there."""

    image: Image.Image
    format: str
    width: int
    height: int
    conversion: str = ""  # empty when the file was 8-bit RGB already
    quant_step: float = 1.0  # JPEG only: how coarsely it was compressed (1 = quality 100)


def _scaled_to_8bit(im: Image.Image) -> Image.Image:
    """16- or 32-bit grayscale to 8-bit by its bit depth, not by clipping at 255."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16") or (arr.dtype.kind in "iu" and arr.max(initial=0) > 255):
        arr = np.clip(arr, 0, 65535).astype(np.uint32) >> 8
    elif arr.dtype.kind == "f":
        top = float(arr.max(initial=0.0))
        arr = arr * (255.0 if top <= 1.0 else 1.0)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")


def _is_16bit_rgb(im: Image.Image) -> bool:
    """True for 48-bit RGB files, which Pillow opens as 8-bit 'RGB'; only known before load()."""
    return im.mode == "RGB" and any(
        isinstance(t.args, str) and t.args.startswith(("RGB;16", "RGBX;16")) for t in im.tile)


def to_rgb(im: Image.Image, wide: bool = False) -> tuple[Image.Image, str]:
    """Convert a loaded image to 8-bit RGB; returns it and a note of what changed ('' if none).

    ``wide`` says the file held 16 bits per channel (Pillow keeps the high byte of each).
    """
    if im.mode == "RGB":
        return im, "16-bit RGB reduced to 8-bit" if wide else ""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        name = "16-bit grayscale" if im.mode.startswith("I;16") else _MODE_NAMES[im.mode]
        return _scaled_to_8bit(im).convert("RGB"), f"{name} ({im.mode}) converted to RGB"
    name = _MODE_NAMES.get(im.mode, im.mode)
    if im.mode in ("RGBA", "RGBa", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Transparent pixels would otherwise turn black; a white slide background is closer.
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, rgba).convert("RGB")
        return rgb, f"{name} ({im.mode}) converted to RGB on white"
    return im.convert("RGB"), f"{name} ({im.mode}) converted to RGB"


def decode_bytes(data: bytes, extension: str) -> DecodedImage:
    """Decode a file's bytes fully to RGB, or raise ImageDecodeError saying what is wrong."""
    if not data:
        raise ImageDecodeError(EMPTY_FILE)
    ext = extension.lower()
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or "unknown"
            allowed = FORMATS_BY_EXTENSION.get(ext)
            if allowed is not None and fmt not in allowed:
                proper = _EXTENSION_FOR_FORMAT.get(fmt, f".{fmt.lower()}")
                raise ImageDecodeError(
                    f"{fmt} data named {ext}: wrong extension for its content (rename to {proper})"
                )
            width, height = im.size
            wide = _is_16bit_rgb(im)
            step = jpeg_quant_step(im)
            im.load()
            rgb, note = to_rgb(im, wide)
            rgb.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"too large to decode safely ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not an image file Pillow can read") from None
    except DECODE_ERRORS as exc:
        raise ImageDecodeError(f"cannot be decoded ({exc or type(exc).__name__})") from None
    return DecodedImage(rgb, fmt, width, height, note, step)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read and fully decode one image file to an (H, W, 3) uint8 array, as the scan does."""
    with open(path, "rb") as fh:
        data = fh.read()
    return np.asarray(decode_bytes(data, os.path.splitext(os.fspath(path))[1]).image)


RESIZE_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
}
DRAFT_BY_DEFAULT = {"nearest": False, "area": True, "bilinear": True}
"""JPEG draft mode (DCT scaling) per resize method, measured on the real 250 px sample with
``benchmarks/bench_cache.py`` (2 busy cores, indicative): at 64 px it makes the cache build
~1.1-1.5x faster (area 3,230 -> 3,660 img/s, bilinear 2,610 -> 3,410, nearest 3,520 -> 4,030).
Draft decodes at 1/2 (or 1/4, 1/8) resolution by scaling in the DCT domain, i.e. an area-like
reduction before the final resize. Mean absolute difference from the full decode at 64 px:
bilinear 0.4 and area 1.7 grey levels out of 255 (for area, most of that is the grid of a 2x
reduction not lining up with a 250->64 box: an exact 2x2 mean then BOX differs by as much,
and draft differs from that by only 0.35), while nearest changes by 2.1 levels because it
then samples 2x2 averages instead of original pixels. Decision: draft is on by default for
``area`` and ``bilinear`` (the same kind of area-weighted result, faster); ``nearest`` stays
exact by default, so it is the paper's pure nearest-neighbour sampling of the original pixels
(``draft=True`` opts in, and is part of the cache key). Draft only applies when the target is
at most half the source size (for 250 px images: up to 125 px; nothing changes at 128 px)."""


def check_resize(size: int, method: str) -> None:
    """A one-line error unless ``method`` is a resize method and ``size`` a positive size."""
    if method not in RESIZE_METHODS:
        raise HemacnnError(f"unknown resize method {method!r}; choose one of "
                           f"{', '.join(RESIZE_METHODS)}")
    if int(size) < 1:
        raise HemacnnError(f"image size must be a positive number of pixels, got {size}")


def preprocess_image(path: str | os.PathLike, size: int, method: str = "nearest",
                     draft: bool | None = None) -> np.ndarray:
    """Decode ``path`` to RGB and resize to ``size`` x ``size``: uint8 array (H, W, 3)."""
    check_resize(size, method)
    use_draft = DRAFT_BY_DEFAULT[method] if draft is None else draft
    try:
        with Image.open(path) as img:
            if use_draft and img.format == "JPEG" and min(img.size) >= 2 * size:
                # Pillow picks the largest DCT scale that keeps the image >= size.
                img.draft("RGB", (size, size))
            rgb, _ = to_rgb(img)
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), RESIZE_METHODS[method])
            arr = np.asarray(rgb, dtype=np.uint8)
    except Image.DecompressionBombError:
        raise UnreadableImage(path, "too large to decode safely") from None
    except (OSError, Image.UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise UnreadableImage(path, str(exc)) from None
    return arr


def _missing(path: str | os.PathLike) -> UnreadableImage | None:
    """Why ``path`` is no image file at all (a path that is not there, a folder), else None."""
    if not os.path.lexists(path):
        return UnreadableImage(path, "no such file or folder", f"{path}: no such file or folder")
    if os.path.isdir(path):
        return UnreadableImage(path, "a folder, not an image", f"{path} is a folder, not an image")
    if os.path.isfile(path) and os.path.getsize(path) == 0:  # Pillow: "cannot identify image file"
        return UnreadableImage(path, EMPTY_FILE, f"{path}: {EMPTY_FILE}")
    return None


def load_images(paths: Sequence[str | os.PathLike], card: dict[str, Any]
                ) -> tuple[np.ndarray, list[int], list[UnreadableImage]]:
    """Preprocess files as the model card says (its input size and resize method): (images,
    indices that loaded, why the others did not). Predict, evaluate, explain, serve and
    ensembles all read their images here."""
    size, method = int(card["input_size"]), card["resize_method"]
    arrays, ok, errors = [], [], []
    for i, p in enumerate(paths):
        missing = _missing(p)
        if missing:
            errors.append(missing)
            continue
        try:
            arrays.append(preprocess_image(p, size, method))
            ok.append(i)
        except UnreadableImage as exc:
            errors.append(exc)
    images = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), dtype=np.uint8)
    return images, ok, errors
