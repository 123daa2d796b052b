"""The model card's entries for use on other laboratories' images, from the config and the
training images: the stain reference, the HED jitter used, the colour statistics, the class map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.config import Config
from hemacnn.data.colour import COLOUR_KEY, HED_KEY, STAIN_KEY, colour_stats, sample
from hemacnn.data.stain import fit_reference
from hemacnn.scoring.classmap import SHIPPED, load_class_map, resolve


def domain_card(cfg: Config, classes: list[str], train_images: np.ndarray) -> dict[str, Any]:
    """Card entries (fields of :class:`hemacnn.card.model.ModelCard`, which checks them when
    training adds them with :func:`hemacnn.card.extend_card`); a switched-off option adds
    nothing (so such cards are as they were, apart from the colour statistics, which change no
    prediction)."""
    entries: dict[str, Any] = {COLOUR_KEY: colour_stats(train_images)}
    if cfg.data.stain_norm != "none":
        entries[STAIN_KEY] = fit_reference(sample(train_images), cfg.data.stain_norm)
    if cfg.recipe.hed_jitter > 0:
        entries[HED_KEY] = cfg.recipe.hed_jitter  # training only: a record, not applied later
    spec = cfg.data.class_map
    if spec is not None:
        resolve(load_class_map(spec), classes, "this run's data.classes")  # fail before training
        entries["class_map"] = spec if spec in SHIPPED else str(Path(spec).resolve())
    return entries
