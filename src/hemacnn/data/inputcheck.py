"""Is a file to classify like the cells the model was trained on? Typed warnings saying why not.

A classifier answers for any picture, so a grayscale scan, a CMYK export, a 16-bit microscope
file, a whole-slide tile at 4000x4000 px or a blank frame all get a confident-looking class.
:func:`check_input` names what is unlike the training images, from the scan's own full decode
of the file (:func:`hemacnn.data.scan.check_file`: the pixel-damage check and the colour-mode
conversion note) and from the preprocessed pixels the model saw. The training images' typical
size and mode come from the model card (:func:`source_images`, written by training); a card
without them (no training image of known size) gets the mode and colour checks only, against
8-bit RGB (what every Matek image is).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.data.manifest import Entry
from hemacnn.data.scan import check_file

SIZE_FACTOR = 4.0
"""A side more than this many times larger (or smaller) than the training images' is 'far'."""

BLANK_RANGE = 8
"""Grey levels: an image whose every channel spans no more than this is one colour."""

CARD_KEY = "source_images"


class Concern(Enum):
    """Why a classified file's answer is doubtful (the ``warning`` column holds the values)."""

    PIXELS = "pixels"  # the scan's check finds damaged picture data (the file still decodes)
    FILE = "file"  # a strict full decode fails where the lenient one worked (e.g. wrong extension)
    MODE = "mode"  # not 8-bit RGB like the training images (grayscale, CMYK, 16-bit, alpha)
    SIZE = "size"  # far larger or smaller than the training images
    BLANK = "blank"  # a single colour: there is no cell to see
    COLOUR = "colour"  # the batch's mean colour is far from the training images' (stain, scanner)


@dataclass(frozen=True)
class InputWarning:
    """One way a file differs from the training images, with a few words saying how."""

    concern: Concern
    detail: str


def source_images(entries: Iterable[Entry]) -> dict[str, Any]:
    """The card's note on the training images: their most common size and whether it is RGB."""
    usable = [e for e in entries if e.usable and e.width]
    if not usable:
        return {}
    (width, height), _ = Counter((e.width, e.height) for e in usable).most_common(1)[0]
    # The scan marks every file it had to convert from another mode 'converted'.
    converted = sum(e.status == "converted" for e in usable)
    return {"typical_size": [width, height], "rgb_8bit": converted * 2 < len(usable)}


def _size_warning(width: int, height: int, card: dict[str, Any]) -> InputWarning | None:
    typical = (card.get(CARD_KEY) or {}).get("typical_size")
    if not typical:
        return None  # the card does not know its training images' size
    tw, th = (int(v) for v in typical)
    factor = max(width / tw, tw / width, height / th, th / height)
    if factor <= SIZE_FACTOR:
        return None
    return InputWarning(Concern.SIZE, f"{width}x{height} px, far from the training images' "
                        f"{tw}x{th} px")


def check_input(path: str | os.PathLike, pixels: np.ndarray,
                card: dict[str, Any]) -> list[InputWarning]:
    """What makes ``path`` (preprocessed to ``pixels``, (H, W, 3) uint8) unlike the training
    images of ``card``; empty when nothing does."""
    path = Path(path)
    _, width, height, found = check_file(str(path.parent), path.name)
    rgb_training = (card.get(CARD_KEY) or {}).get("rgb_8bit", True)
    warnings: list[InputWarning] = []
    for status, detail in found:
        if status == "suspicious":
            warnings.append(InputWarning(Concern.PIXELS, detail))
        elif status == "unreadable":
            warnings.append(InputWarning(Concern.FILE, detail))
        elif status == "converted" and rgb_training:
            warnings.append(InputWarning(Concern.MODE, f"{detail}; the training images were "
                                         "8-bit RGB"))
    if width:
        size = _size_warning(width, height, card)
        if size is not None:
            warnings.append(size)
    spread = np.ptp(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    if int(spread.max(initial=0)) <= BLANK_RANGE:
        warnings.append(InputWarning(Concern.BLANK, "a single colour: no cell to see"))
    return warnings
