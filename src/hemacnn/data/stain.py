"""Stain and scanner robustness: HED jitter, stain normalisation, the training colour statistics.

* **HED jitter** (Tellez et al. 2019, "Quantifying the effects of data augmentation and stain
  color normalization", Med Image Anal 58): each training image is moved to the
  haematoxylin-eosin-DAB optical-density space of Ruifrok & Johnston (2001), each stain channel
  scaled by U(1-s, 1+s) and shifted by U(-s, s), and moved back. Tellez's "HED-light" is s=0.05.
  The conversion is one fixed 3x3 matrix (the one scikit-image's ``rgb2hed`` uses), applied here
  in torch so it runs per image inside the training transforms without another dependency.
* **Stain normalisation** (Reinhard et al. 2001, via torchstain): every input image's LAB means
  and standard deviations are mapped to a reference measured on the training images; the
  reference is stored in the model card, so every inference path (:func:`normalize_for_card`)
  applies the same map. It is applied to uint8 images before the network, outside the model
  (torchstain works per image with masked in-place ops that ONNX cannot express): an exported
  ONNX file carries the reference in its card and ``OnnxClassifier`` applies it before the
  session.
* **Colour statistics**: the training images' per-channel mean/std and the spread of their
  per-image mean colours; a batch whose mean colour lies far from them gets a warning
  (:func:`batch_colour`), the first sign that another stain or scanner made it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchstain.torch.normalizers import TorchReinhardNormalizer

from hemacnn.errors import HemacnnError

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

# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, DAB), as scikit-image has them.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_LOG_ADJUST = float(np.log(1e-6))


class HedJitter:
    """Tellez's HED colour augmentation on uint8 CHW tensors (training only)."""

    def __init__(self, sigma: float) -> None:
        self.sigma = float(sigma)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x.float().div(255.0).clamp_min(1e-6).movedim(-3, -1)  # ...HWC
        hed = (torch.log(rgb) / _LOG_ADJUST) @ _HED_FROM_RGB  # scikit-image's rgb2hed
        s = self.sigma
        alpha = 1.0 + (torch.rand(3) * 2 - 1) * s
        beta = (torch.rand(3) * 2 - 1) * s
        hed = hed * alpha + beta  # not clipped at 0 (rgb2hed does): s=0 gives the image back
        out = torch.exp((hed * _LOG_ADJUST) @ _RGB_FROM_HED)  # hed2rgb
        return out.clamp(0, 1).mul(255.0).round().to(torch.uint8).movedim(-1, -3)


def hed_transform(sigma: float) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The HED jitter, or None when ``sigma`` is 0 (nothing is added to the transforms)."""
    return HedJitter(sigma) if sigma > 0 else None


def sample_index(count: int, n: int = REFERENCE_IMAGES) -> np.ndarray:
    """Up to ``n`` evenly spaced positions among ``count`` images (all of them when fewer)."""
    return np.unique(np.linspace(0, count - 1, min(n, count)).round().astype(int))


def _sample(images: np.ndarray, n: int = REFERENCE_IMAGES) -> np.ndarray:
    return np.asarray(images[sample_index(len(images), n)])


def fit_reference(images: np.ndarray, method: str = "reinhard") -> dict[str, Any]:
    """The stain reference of uint8 NHWC training images (torchstain's Reinhard ``fit`` on one
    mosaic of up to :data:`REFERENCE_IMAGES` of them), as the card stores it."""
    if method != "reinhard":
        raise HemacnnError(f"unknown stain normalisation {method!r}; choose reinhard or none")
    if not len(images):
        raise HemacnnError("stain normalisation needs training images to measure a reference")
    sample = _sample(images)
    mosaic = torch.from_numpy(np.concatenate(list(sample), axis=1)).permute(2, 0, 1)
    normalizer = TorchReinhardNormalizer()
    normalizer.fit(mosaic)
    return {"method": method, "target_means": [float(v) for v in normalizer.target_means],
            "target_stds": [float(v) for v in normalizer.target_stds], "images": len(sample)}


class StainNormalizer:
    """A card's stain reference applied to uint8 images (NHWC arrays or one CHW tensor)."""

    def __init__(self, reference: dict[str, Any]) -> None:
        self.normalizer = TorchReinhardNormalizer()
        self.normalizer.target_means = torch.tensor(reference["target_means"])
        self.normalizer.target_stds = torch.tensor(reference["target_stds"])

    def hwc(self, image: np.ndarray) -> np.ndarray:
        """One uint8 HWC image, normalised; a flat image (no spread to scale) is kept as is."""
        if float(image.std()) < 1e-3:
            return image
        x = torch.from_numpy(np.require(image, requirements="CW")).permute(2, 0, 1)
        return self.normalizer.normalize(x).numpy()  # torchstain answers HWC

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC images, normalised."""
        if not len(images):
            return images
        return np.stack([self.hwc(im) for im in images])


def card_normalizer(card: dict[str, Any]) -> StainNormalizer | None:
    """The stain normaliser a model card asks for, or None."""
    ref = card.get(STAIN_KEY)
    return StainNormalizer(ref) if ref else None


def normalize_for_card(images: np.ndarray, card: dict[str, Any]) -> np.ndarray:
    """uint8 NHWC images as the model expects them: stain-normalised when its card says so,
    else the very same array."""
    normalizer = card_normalizer(card)
    return images if normalizer is None else normalizer(images)


# --------------------------------------------------------------------------- colour statistics


def colour_stats(images: np.ndarray) -> dict[str, Any]:
    """Per-channel pixel mean/std of uint8 NHWC training images and the mean and covariance of
    their per-image mean colours (what :func:`batch_colour` measures distances with)."""
    sample = _sample(images).astype(np.float64)
    per_image = sample.mean(axis=(1, 2))
    return {"mean": [float(v) for v in sample.mean(axis=(0, 1, 2))],
            "std": [float(v) for v in sample.std(axis=(0, 1, 2))],
            "image_mean": [float(v) for v in per_image.mean(axis=0)],
            "image_mean_cov": np.cov(per_image.T).tolist() if len(per_image) > 1
            else np.eye(3).tolist(),
            "images": len(sample)}


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


def image_means(images: np.ndarray) -> np.ndarray:
    """Mean RGB of each uint8 NHWC image, (N, 3) float."""
    return images.reshape(len(images), -1, images.shape[-1]).mean(axis=1)


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
