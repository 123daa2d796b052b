"""L2 kernel penalty with Keras' meaning (Section IV-E: ``kernel_regularizer=l2(0.01)``)."""

from __future__ import annotations

import torch
from torch import nn


def kernel_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight tensors of every convolution and dense layer (no biases, no BatchNorm)."""
    return [m.weight for m in model.modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def l2_penalty(model: nn.Module, lam: float) -> torch.Tensor:
    """Keras L2: ``lam * sum(w**2)`` over every conv/dense kernel, to be added to the loss.

    Not PyTorch's ``weight_decay``: that adds ``wd * w`` to the gradient, i.e. the gradient
    of ``(wd / 2) * sum(w**2)`` -- a factor of 2 apart (Keras lam = 0.01 ~ weight_decay 0.02)
    -- it never shows in the logged loss, and set on all parameters it would also shrink
    biases and BatchNorm, which Keras' kernel_regularizer leaves alone.
    """
    weights = kernel_weights(model)
    if not weights or lam == 0:
        return torch.zeros((), device=weights[0].device if weights else None)
    # Sum in float32 even under bf16 autocast: tiny squares would be lost in bf16.
    total = torch.stack([w.float().pow(2).sum() for w in weights]).sum()
    return lam * total
