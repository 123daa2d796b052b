"""Does a run folder's model belong to it? The model's own card against ``model_card.json``.

A run folder is its checkpoint plus the files that describe it (card, splits, config); a
checkpoint copied in from another run would be evaluated on the wrong split, scored in the
wrong classes, and its figures written over the run's. So loading a run folder compares the
checkpoint's card (or its ONNX export's) with the folder's on what defines the model.
Plain data only (no torch): the ONNX path checks too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hemacnn.card import read_card
from hemacnn.errors import HemacnnError
from hemacnn.rundir import RunDir

# What the network computes and means: its classes, input and architecture (whose options hold
# the input normalisation). The rest of a card (metrics, reports) may grow after training.
MODEL_FIELDS = ("classes", "input_size", "resize_method", "arch")
# Compared only where both cards record one (older cards and bare checkpoints may not).
HASH_FIELDS = ("manifest_hash",)


def card_differences(model: Mapping[str, Any], folder: Mapping[str, Any]) -> list[str]:
    """The fields on which two cards describe different models, in words (model's value
    first, the folder card's second)."""
    ours, theirs = _fields(model), _fields(folder)
    diffs = [f"{f} {_text(ours.get(f))} vs {_text(theirs.get(f))}"
             for f in dict.fromkeys([*ours, *theirs]) if ours.get(f) != theirs.get(f)]
    diffs += [f"{f} {model[f]} vs {folder[f]}" for f in HASH_FIELDS
              if model.get(f) and folder.get(f) and model[f] != folder[f]]
    return diffs


def _fields(card: Mapping[str, Any]) -> dict[str, Any]:
    """MODEL_FIELDS with ``arch`` spread out (``arch.name``, ``arch.options.width``...), so a
    difference names the one entry at fault."""
    out: dict[str, Any] = {}

    def add(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                add(f"{key}.{k}", v)
        else:
            out[key] = value

    for f in MODEL_FIELDS:
        add(f, card.get(f))
    return out


def _text(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def check_run_card(run_dir: str | os.PathLike, card: Mapping[str, Any],
                   source: str | os.PathLike) -> None:
    """A one-line error when ``card`` (read from ``source``, the folder's checkpoint or its
    export) describes another model than the run folder's ``model_card.json``."""
    run = RunDir(run_dir)
    if not run.card.is_file():  # a bare checkpoints folder: nothing to compare with
        return
    diffs = card_differences(card, read_card(run.path))
    if diffs:
        raise HemacnnError(f"{source} does not belong to the run described by {run.card}: "
                           f"{'; '.join(diffs)} (the model's, then the folder card's); put the "
                           "run's own checkpoint back, or give the checkpoint file itself "
                           "instead of the folder")
