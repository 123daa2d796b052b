"""Input normalisation as the network's first layer, so every use of a model applies it.

Pretrained weights expect their own input scaling (TFLite MobileNetV2: mean = std = 0.5, i.e.
pixels in [-1, 1]; timm and torchvision downloads: ImageNet's mean/std). hemacnn feeds every
model pixels in [0, 1] (training, predict, evaluate, the ONNX export, explain, serve), so the
scaling lives inside the network: a checkpoint, an exported ONNX graph and a heat map then
carry it without being told. The builder wraps the model only when a mean/std is configured,
so a model without one keeps its state-dict keys and old checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class InputNormalization(nn.Module):
    """``(x - mean) / std`` per channel, for NCHW input in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        # Not persistent: the values come from the arch options (the model card), so a
        # checkpoint's state dict stays the network's own tensors.
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class NormalizedNet(nn.Module):
    """A built model (``net``) behind an :class:`InputNormalization` (``normalize``)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = InputNormalization(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def core_model(model: nn.Module) -> nn.Module:
    """The network without its normalisation layer (what pretrained weights and heads name)."""
    return model.net if isinstance(model, NormalizedNet) else model
