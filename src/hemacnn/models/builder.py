"""One builder for every layer table in :mod:`hemacnn.models.tables`, with Keras semantics."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from hemacnn.errors import HemacnnError
from hemacnn.models.tables import PaperTable, Row

# Keras BatchNormalization defaults, which the paper's models had: epsilon 1e-3 (PyTorch:
# 1e-5) and momentum 0.99 for the running statistics. The two libraries define momentum the
# other way round (Keras: weight of the old value; PyTorch: weight of the new batch), so
# Keras 0.99 is PyTorch 0.01. Running statistics matter only in eval mode: with 0.99 they
# follow the weights slowly, which is what the paper's validation curves measured, but which
# lags far behind the weights in a short run (the model option ``bn_momentum`` changes it).
BN_EPS = 1e-3
KERAS_BN_MOMENTUM = 0.99

# Every BatchNorm flavour torch has; timm's BatchNormAct2d and friends subclass these.
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def set_bn_momentum(model: nn.Module, keras_momentum: float) -> int:
    """Give every BatchNorm layer of ``model`` this momentum (Keras convention); returns count.

    Keras' momentum is the weight of the old running value, PyTorch's the weight of the new
    batch, so PyTorch's ``momentum`` is ``1 - keras_momentum``.
    """
    count = 0
    for m in model.modules():
        if isinstance(m, _BATCH_NORMS):
            m.momentum = round(1.0 - keras_momentum, 12)  # 0.1, not 0.09999999999999998
            count += 1
    return count

# std of a unit normal truncated at +-2 std (scipy.stats.truncnorm.std(-2, 2)). Keras'
# VarianceScaling divides by it so that the *truncated* samples have std sqrt(scale / fan_in).
_TRUNC_STD = 0.87962566103423978


def _randn_like(x: torch.Tensor) -> torch.Tensor:
    """``randn_like`` that stays fast for channels-last activations.

    On the CPU, ``randn_like`` of a channels-last tensor takes a strided slow path (measured
    9x slower, which made noisy MV3 steps 3x slower); drawing NHWC contiguously and permuting
    gives the same distribution and layout.
    """
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last):
        n, c, h, w = x.shape
        return torch.randn(n, h, w, c, dtype=x.dtype, device=x.device).permute(0, 3, 1, 2)
    return torch.randn_like(x)


class GaussianNoise(nn.Module):
    """Keras ``GaussianNoise``: adds N(0, std^2) noise in training, identity in eval."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.std == 0.0:
            return x
        return x + _randn_like(x) * self.std

    def extra_repr(self) -> str:
        return f"std={self.std}"


class PaperNet(nn.Sequential):
    """A model built from a layer table; ``forward`` returns LOGITS (no softmax).

    Softmax belongs in the loss (``F.cross_entropy`` takes logits) and in prediction
    (``logits.softmax(-1)``), where it is numerically safer than inside the model.
    """


def scaled(channels: int, width: float) -> int:
    """Channel count times the width multiplier, rounded half up, at least 1."""
    return max(1, int(math.floor(channels * width + 0.5)))


def _row_opts(row: Row) -> dict:
    return row[2] if len(row) > 2 else {}


def feature_size(rows: tuple[Row, ...], input_size: int) -> int | None:
    """Spatial side after the convolution/pooling rows, or None if some layer empties it."""
    s = input_size
    for row in rows:
        kind = row[0]
        if kind == "conv":
            s -= 2  # 3x3, valid padding
        elif kind in ("maxpool", "avgpool"):
            s //= row[1]  # stride = pool size, remainder dropped
        if s < 1:
            return None
    return s


def table_min_input(rows: tuple[Row, ...]) -> int:
    """Smallest input side for which every layer of the table has a non-empty output."""
    need = 1  # walk backwards: what each layer's input must be for its output to be >= need
    for row in reversed(rows):
        if row[0] == "conv":
            need += 2
        elif row[0] in ("maxpool", "avgpool"):
            need *= row[1]
    return need


def keras_init(module: nn.Module, scheme: str) -> None:
    """Initialise every Conv2d/Linear like Keras: kernels by ``scheme``, biases zero."""
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        if scheme == "he_normal":
            # Keras he_normal = VarianceScaling(2.0, "fan_in", "truncated_normal"):
            # truncated at +-2 sigma, sigma chosen so the truncated std is sqrt(2 / fan_in).
            fan_in = nn.init._calculate_fan_in_and_fan_out(m.weight)[0]
            sigma = math.sqrt(2.0 / fan_in) / _TRUNC_STD
            nn.init.trunc_normal_(m.weight, 0.0, sigma, -2 * sigma, 2 * sigma)
        elif scheme == "glorot_uniform":
            nn.init.xavier_uniform_(m.weight)  # same fan definitions as Keras
        else:
            raise ValueError(f"unknown init scheme {scheme!r}")
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_table(
    table: PaperTable,
    num_classes: int,
    input_size: int,
    *,
    width: float = 1.0,
    noise_std: float = 0.0,
    in_channels: int = 3,
    dropout: float | None = None,
    bn_momentum: float | None = None,
) -> PaperNet:
    """Walk a layer table and return the model (input sizes are checked by the caller).

    ``bn_momentum`` is Keras' convention; None: Keras' default 0.99, as the paper's models had.
    """
    if bn_momentum is None:
        bn_momentum = KERAS_BN_MOMENTUM
    side = feature_size(table.rows, input_size)
    if side is None:  # the registry checks first; this guards direct callers
        raise HemacnnError(
            f"model {table.name} needs input_size >= {table_min_input(table.rows)} "
            f"(got {input_size})"
        )
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, features = in_channels, 0
    idx = 0  # the paper's layer number, L0, L1, ...: advances at each conv/dense row
    n_noise = 0
    for row in table.rows:
        kind = row[0]
        if kind == "conv":
            out = scaled(row[1], width)
            bn = bool(_row_opts(row).get("bn", False))
            # With BatchNorm right after, a conv bias is redundant, but Keras keeps it
            # (use_bias=True by default) and so do we, so parameter counts match Keras.
            layers[f"L{idx}_conv"] = nn.Conv2d(channels, out, kernel_size=3, padding=0)
            if bn:
                layers[f"L{idx}_bn"] = nn.BatchNorm2d(
                    out, eps=BN_EPS, momentum=round(1 - bn_momentum, 12))
            layers[f"L{idx}_relu"] = nn.ReLU()
            channels = out
            idx += 1
        elif kind == "maxpool":
            layers[f"L{idx - 1}_maxpool"] = nn.MaxPool2d(row[1], stride=row[1])
        elif kind == "avgpool":
            layers[f"L{idx - 1}_avgpool"] = nn.AvgPool2d(row[1], stride=row[1])
        elif kind == "noise":
            n_noise += 1
            if noise_std > 0:
                layers[f"L{idx}_noise"] = GaussianNoise(noise_std)
        elif kind == "flatten":
            layers["flatten"] = nn.Flatten()
            features = channels * side * side
        elif kind == "dense":
            out = scaled(row[1], width)
            layers[f"L{idx}_dense"] = nn.Linear(features, out)
            layers[f"L{idx}_relu"] = nn.ReLU()
            features = out
            idx += 1
        elif kind == "dropout":
            layers[f"L{idx - 1}_dropout"] = nn.Dropout(row[1] if dropout is None else dropout)
        elif kind == "logits":
            layers[f"L{idx}_dense"] = nn.Linear(features, num_classes)
            idx += 1
        else:
            raise ValueError(f"table {table.name}: unknown row kind {kind!r}")
    if noise_std > 0 and n_noise == 0:
        raise HemacnnError(
            f"model {table.name} has no noise positions in its table (the paper adds "
            "Gaussian noise to mv3 only); set noise_std to 0"
        )
    model = PaperNet(layers)
    keras_init(model, table.init)
    return model
