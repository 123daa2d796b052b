"""The model card (MONAI-bundle style): all a checkpoint, ONNX file or ensemble needs to be used
alone. :func:`build_card` is the one place a card is made, :func:`parse_card` the one place one
is checked, wherever it was stored (``model_card.json``, a checkpoint's
``hyper_parameters.card``, ONNX metadata).

Plain JSON and paths, no torch: a run folder with a fresh ONNX export predicts without it
(:mod:`hemacnn.inference.classifier`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hemacnn import __version__
from hemacnn.atomic import write_json
from hemacnn.errors import HemacnnError
from hemacnn.rundir import RunDir

CARD_FORMAT = "hemacnn-card/1"
ONNX_SUFFIX = ".onnx"
ONNX_CARD_KEY = "hemacnn_card"  # the ONNX metadata entry that holds the card


def build_card(*, classes: Sequence[str], class_names: Sequence[str], input_size: int,
               resize_method: str, arch: dict[str, Any], data_root: str | None,
               manifest_hash: str | None, seed: int | None, **extra: Any) -> dict[str, Any]:
    """The model card: all a checkpoint (or ONNX file, or ensemble) needs to be used alone.

    ``extra`` entries (e.g. ``init_weights``) are added as they are; ``None`` ones are left out.
    """
    card = {
        "format": CARD_FORMAT,
        "classes": list(classes),
        "class_names": list(class_names),
        "input_size": int(input_size),
        "resize_method": resize_method,
        "value_range": [0, 1],
        "channels": "RGB",
        "arch": arch,
        "hemacnn_version": __version__,
        "data_root": data_root,
        "manifest_hash": manifest_hash,
        "seed": seed,
    }
    card.update({k: v for k, v in extra.items() if v is not None})
    return card


def parse_card(card: Any, where: str | os.PathLike) -> dict[str, Any]:
    """``card`` when it is a hemacnn model card, else a one-line error naming ``where``."""
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT or "arch" not in card:
        raise HemacnnError(f"{where} is not a hemacnn model (no model card); train one with "
                           "`hemacnn train`")
    return card


def write_card(path: str | os.PathLike, card: dict[str, Any]) -> Path:
    """Write ``card`` as JSON to ``path`` (atomically)."""
    return write_json(Path(path), parse_card(card, path))


def read_card(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The model card of a run (or ensemble) folder, or a one-line error when it is not one."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise HemacnnError(f"run folder {run.path} not found; give the folder `hemacnn train` "
                           "wrote")
    if not run.card.is_file():
        raise HemacnnError(f"{run.path} is not a hemacnn run folder (no {RunDir.CARD}); give "
                           "the folder `hemacnn train` wrote")
    try:
        card = json.loads(run.card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HemacnnError(f"cannot read {run.card}: {exc}") from None
    return parse_card(card, run.card)
