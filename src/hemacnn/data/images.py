"""Strict image decoding: every pixel decoded, every problem named, always RGB out.

Pillow is made strict here (truncated files raise instead of being padded with grey), and only
the exceptions its decoders raise are caught, so a bug in our own code is never mistaken for a
bad file.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

from hemacnn.data.corruption import jpeg_quant_step

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
        raise ImageDecodeError("empty file (0 bytes)")
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
