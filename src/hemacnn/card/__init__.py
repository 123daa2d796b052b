"""The model card (MONAI-bundle style): all a checkpoint, ONNX file or ensemble needs to be used
alone, and what it is for. One definition, :class:`~hemacnn.card.model.ModelCard` (pydantic):
:func:`build_card` makes a card through it and :func:`extend_card` adds to one (training, the
domain entries, export, ensembles). :func:`parse_card` is the one place a stored card is checked,
wherever it was stored (``model_card.json``, a checkpoint's ``hyper_parameters.card``, ONNX
metadata): an older card is brought up to date by :func:`migrate_card`, then checked against
``ModelCard``'s committed JSON schema (:mod:`hemacnn.card.schema`). A bad card is one error line
naming the file and the field.

A card in memory is its JSON form (a dict), as it is stored: a checkpoint's hyper-parameters
must be plain data (``torch.load(weights_only=True)``). Reading needs no torch and no pydantic:
a run folder with a fresh ONNX export predicts without either
(:mod:`hemacnn.inference.classifier`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hemacnn import __version__
from hemacnn.atomic import write_json
from hemacnn.card.schema import (
    CARD_FORMAT,
    FORMAT_PREFIX,
    INTENDED_USE,
    MATEK_DATASET,
    first_problem,
    outputs_entry,
)
from hemacnn.classes import is_matek_set
from hemacnn.errors import HemacnnError
from hemacnn.rundir import RunDir

__all__ = ["CARD_FORMAT", "OLD_FORMAT", "ONNX_CARD_KEY", "ONNX_SUFFIX", "build_card",
           "extend_card", "metrics_entry", "migrate_card", "parse_card", "read_card",
           "write_card"]

OLD_FORMAT = "hemacnn-card/1"  # read through migrate_card
ONNX_SUFFIX = ".onnx"
ONNX_CARD_KEY = "hemacnn_card"  # the ONNX metadata entry that holds the card
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")


def __getattr__(name: str) -> Any:
    if name == "ModelCard":
        # lazy: pydantic costs ~100 ms of start-up (import and model build, this 2-core CPU),
        # which a one-image predict does without
        from hemacnn.card.model import ModelCard

        return ModelCard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _validated(card: Mapping[str, Any]) -> dict[str, Any]:
    """``card`` through ``ModelCard``: checked, in its stored JSON form."""
    # lazy: pydantic, ~100 ms of start-up (see __getattr__); only writers come here
    from pydantic import ValidationError

    from hemacnn.card.model import ModelCard  # lazy: pydantic again (the model's build)

    try:
        return ModelCard.model_validate(dict(card)).as_json()
    except ValidationError as exc:
        raise HemacnnError(f"cannot make the model card: {_first_error(exc)}") from None


def _first_error(exc: Any) -> str:
    """Pydantic's first complaint in the words :func:`parse_card` uses."""
    err = exc.errors()[0]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    if err["type"] == "missing":
        return f"field '{path}' is missing"
    if err["type"] == "extra_forbidden":
        return f"field '{path}' is not a model card field"
    msg = err["msg"].removeprefix("Value error, ")
    return f"field '{path}': {msg}" if path else msg


def build_card(*, classes: Sequence[str], class_names: Sequence[str], input_size: int,
               resize_method: str, arch: dict[str, Any], data_root: str | None,
               manifest_hash: str | None, seed: int | None, **extra: Any) -> dict[str, Any]:
    """A new model card (checked by ``ModelCard``), in its stored JSON form.

    ``extra`` entries (e.g. ``init_weights``) are fields of ``ModelCard``; ``None`` ones are
    left out. ``data_root`` is recorded as the user gave it, never resolved here.
    """
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "hemacnn_version": __version__,
        "intended_use": INTENDED_USE,
        "outputs": outputs_entry(arch.get("name", "")),
        "classes": list(classes),
        "class_names": list(class_names),
        "input_size": input_size,
        "resize_method": resize_method,
        "value_range": [0, 1],
        "channels": "RGB",
        "arch": arch,
        "data_root": data_root,
        "manifest_hash": manifest_hash,
        "seed": seed,
    }
    if is_matek_set(classes):
        card["dataset"] = dict(MATEK_DATASET)
    card.update({k: v for k, v in extra.items() if v is not None})
    return _validated(card)


def extend_card(card: Mapping[str, Any], **entries: Any) -> dict[str, Any]:
    """``card`` with ``entries`` added or replaced (checked by ``ModelCard``); ``None`` ones are
    left as they were."""
    return _validated({**card, **{k: v for k, v in entries.items() if v is not None}})


def metrics_entry(result: Mapping[str, Any], checkpoint: str | os.PathLike,
                  tta: bool) -> dict[str, Any]:
    """The card's ``metrics`` from a test split's evaluation (``compute_metrics``' result)."""
    return {"split": "test", "images": int(result["n"]),
            **{k: float(result[k]) for k in HEADLINE},
            "tta": bool(tta), "checkpoint": Path(checkpoint).name}


def migrate_card(card: Mapping[str, Any]) -> dict[str, Any]:
    """An older card in the current format (the one migration: ``hemacnn-card/1`` to ``/2``);
    a current card as it is.

    /1 stored the input normalisation twice (``normalize`` beside ``arch.options``); /2 keeps it
    once, in the arch options that build the network, and adds ``intended_use``, ``outputs`` and
    (for Matek's classes) ``dataset``. ``data_root`` stays as /1 wrote it (an absolute path).
    """
    if card.get("format") != OLD_FORMAT:
        return dict(card)
    new = {k: v for k, v in card.items() if k != "normalize"}
    arch = card.get("arch")
    new.update(format=CARD_FORMAT, intended_use=INTENDED_USE,
               outputs=outputs_entry(arch.get("name") if isinstance(arch, dict) else ""))
    classes = card.get("classes")
    if (isinstance(classes, list) and all(isinstance(c, str) for c in classes)
            and is_matek_set(classes)):
        new.setdefault("dataset", dict(MATEK_DATASET))
    return new


def parse_card(card: Any, where: str | os.PathLike) -> dict[str, Any]:
    """``card`` (current or migrated) when it is a good hemacnn model card, else a one-line
    error naming ``where`` and the field at fault."""
    fmt = card.get("format") if isinstance(card, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith(FORMAT_PREFIX):
        raise HemacnnError(f"{where} is not a hemacnn model (no model card); train one with "
                           "`hemacnn train`")
    if fmt not in (CARD_FORMAT, OLD_FORMAT):
        raise HemacnnError(f"{where} holds a model card of format {fmt}, which hemacnn "
                           f"{__version__} cannot read (it reads {OLD_FORMAT} and "
                           f"{CARD_FORMAT}); use the hemacnn that made it")
    card = migrate_card(card)
    problem = first_problem(card)
    if problem is not None:
        raise HemacnnError(f"{where} holds a bad model card: {problem}; make the model again "
                           "(`hemacnn train`, `export` or `ensemble`)")
    return card


def write_card(path: str | os.PathLike, card: Mapping[str, Any]) -> Path:
    """Write ``card`` as JSON to ``path`` (atomically), once it has passed :func:`parse_card`."""
    write_json(Path(path), parse_card(dict(card), path))
    return Path(path)


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
