"""Colour statistics of the training images, the batch colour check, and the card's stain map.

Plain numpy (no torch), so that predicting with an ONNX export starts without torch; the stain
normaliser itself (torchstain) is in :mod:`hemacnn.data.stain` and loaded only for a card that
asks for it.

* **Colour statistics**: the training images' per-channel mean/std and the spread of their
  per-image mean colours; a batch whose mean colour lies far from them gets a warning
  (:func:`batch_colour`), the first sign that another stain or scanner made it.
* :func:`normalize_for_card`: uint8 images as a card's model expects them (stain-normalised
  when the model was trained with ``data.stain_norm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

STAIN_KEY = "stain_norm"
COLOUR_KEY = "colour_stats"
HED_KEY = "hed_jitter"
REFERENCE_IMAGES = 512
"""Training images (evenly spaced) that the stain reference and colour statistics are measured
on: enough for stable means, cheap on the full 171k-image dataset."""

COLOUR_WARN_DISTANCE = 4.0
"""Mahalanobis distance (over the training images' per-image mean colours) beyond which a
batch's mean colour is 'far'. On the bone-marrow sample 99% of single training images lie
within 3.6 and batches of any one class within 1.1; PBC's cells (another lab and stain) lie at
about 5, class by class."""


def sample_index(count: int, n: int = REFERENCE_IMAGES) -> np.ndarray:
    """Up to ``n`` evenly spaced positions among ``count`` images (all of them when fewer)."""
    return np.unique(np.linspace(0, count - 1, min(n, count)).round().astype(int))


def sample(images: np.ndarray, n: int = REFERENCE_IMAGES) -> np.ndarray:
    """The images at :func:`sample_index`'s positions."""
    return np.asarray(images[sample_index(len(images), n)])


def normalize_for_card(images: np.ndarray, card: dict[str, Any]) -> np.ndarray:
    """uint8 NHWC images as the model expects them: stain-normalised when its card says so,
    else the very same array."""
    if not card.get(STAIN_KEY):
        return images
    # lazy: torch + torchstain, ~3.5 s of start-up on 2 cores; only a model trained with
    # data.stain_norm needs them
    from hemacnn.data.stain import StainNormalizer

    return StainNormalizer(card[STAIN_KEY])(images)


# --------------------------------------------------------------------------- colour statistics


def colour_stats(images: np.ndarray) -> dict[str, Any]:
    """Per-channel pixel mean/std of uint8 NHWC training images and the mean and covariance of
    their per-image mean colours (what :func:`batch_colour` measures distances with)."""
    chosen = sample(images).astype(np.float64)
    per_image = chosen.mean(axis=(1, 2))
    return {"mean": [float(v) for v in chosen.mean(axis=(0, 1, 2))],
            "std": [float(v) for v in chosen.std(axis=(0, 1, 2))],
            "image_mean": [float(v) for v in per_image.mean(axis=0)],
            "image_mean_cov": np.cov(per_image.T).tolist() if len(per_image) > 1
            else np.eye(3).tolist(),
            "images": len(chosen)}


@dataclass(frozen=True)
class BatchColour:
    """How far a batch's mean colour lies from the training images' (None: not measured)."""

    distance: float | None
    mean: list[float]
    far: bool

    def summary(self) -> str:
        """One line for predict and the review page."""
        if self.distance is None:
            return "colour: the model card holds no training colour statistics"
        rgb = ", ".join(f"{v:.0f}" for v in self.mean)
        if self.far:
            return (f"colour warning: this batch's mean colour (RGB {rgb}) lies {self.distance:.1f}"
                    f" training spreads from the training images' (over {COLOUR_WARN_DISTANCE:g}"
                    " is far): another stain or scanner? Expect lower accuracy; stain "
                    "normalisation or --adapt-bn may help")
        return f"colour: batch mean RGB {rgb}, {self.distance:.1f} spreads from the training mean"


def batch_colour(means: np.ndarray, card: dict[str, Any]) -> BatchColour:
    """The Mahalanobis distance of a batch's mean colour (``means``: each image's mean RGB,
    before any stain normalisation) from the training images' per-image mean colours."""
    means = np.asarray(means, dtype=np.float64).reshape(-1, 3)
    stats = card.get(COLOUR_KEY)
    mean = means.mean(axis=0) if len(means) else np.zeros(3)
    if not stats or not len(means):
        return BatchColour(None, [float(v) for v in mean], False)
    cov = np.asarray(stats["image_mean_cov"], dtype=np.float64)
    cov = cov + np.eye(len(cov)) * 1e-3 * max(float(np.trace(cov)) / len(cov), 1.0)  # ridge
    d = mean - np.asarray(stats["image_mean"], dtype=np.float64)
    distance = float(np.sqrt(d @ np.linalg.solve(cov, d)))
    return BatchColour(distance, [float(v) for v in mean], distance > COLOUR_WARN_DISTANCE)
