"""Stain robustness in torch: HED jitter (training) and Reinhard stain normalisation.

* **HED jitter** (Tellez et al. 2019, "Quantifying the effects of data augmentation and stain
  color normalization", Med Image Anal 58): each training image is moved to the
  haematoxylin-eosin-DAB optical-density space of Ruifrok & Johnston (2001), each stain channel
  scaled by U(1-s, 1+s) and shifted by U(-s, s), and moved back. Tellez's "HED-light" is s=0.05.
  The conversion is one fixed 3x3 matrix (the one scikit-image's ``rgb2hed`` uses), applied here
  in torch so it runs per image inside the training transforms without another dependency.
* **Stain normalisation** (Reinhard et al. 2001, via torchstain): every input image's LAB means
  and standard deviations are mapped to a reference measured on the training images; the
  reference is stored in the model card, so every inference path
  (:func:`hemacnn.data.colour.normalize_for_card`, which loads this module only then)
  applies the same map. It is applied to uint8 images before the network, outside the model
  (torchstain works per image with masked in-place ops that ONNX cannot express): an exported
  ONNX file carries the reference in its card and ``OnnxClassifier`` applies it before the
  session.
* The training colour statistics and the batch colour check are in :mod:`hemacnn.data.colour`
  (no torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchstain.torch.normalizers import TorchReinhardNormalizer

from hemacnn.errors import HemacnnError

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


def fit_reference(images: np.ndarray, method: str = "reinhard") -> dict[str, Any]:
    """The stain reference of uint8 NHWC training images (torchstain's Reinhard ``fit`` on one
    mosaic of all of them: give a sample, :func:`hemacnn.data.colour.sample`), as the card
    stores it."""
    if method != "reinhard":
        raise HemacnnError(f"unknown stain normalisation {method!r}; choose reinhard or none")
    if not len(images):
        raise HemacnnError("stain normalisation needs training images to measure a reference")
    mosaic = torch.from_numpy(np.concatenate(list(images), axis=1)).permute(2, 0, 1)
    normalizer = TorchReinhardNormalizer()
    normalizer.fit(mosaic)
    return {"method": method, "target_means": [float(v) for v in normalizer.target_means],
            "target_stds": [float(v) for v in normalizer.target_stds], "images": len(images)}


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
