"""VGG16 as torchvision defines it (configuration "D"), trained from scratch.

The paper's comparison model (Section V, Table 8) is VGG16 trained on the same data with
Adam lr 1e-4. We use torchvision's own table (``cfgs["D"]``), layer builder and ``VGG``
class, so the state dict has torchvision's keys; weights are never downloaded.

Adaptations: ``num_classes`` outputs; optional ``in_channels``; a ``width`` multiplier
applied to every convolution and to the two hidden dense layers (4096 units); the
classifier's dropout rate. Input size: torchvision's ``AdaptiveAvgPool2d((7, 7))`` is kept,
so the classifier is 512*7*7 -> 4096 at every input size; below 224 px the pool simply
repeats the smaller feature map (at 128 px: 4x4 -> 7x7). The five 2x2 max-pools need at
least 32 px (32 -> 1). Initialisation is torchvision's (Kaiming normal, fan_out, for
convolutions; N(0, 0.01) for dense layers), not Keras' glorot_uniform.
"""

from __future__ import annotations

import torch
from torch import nn

from hemacnn.models.builder import scaled

# torchvision's cfgs["D"] (a test checks they agree). Written out because importing torchvision
# imports torch._dynamo: 1.5-2 s of every command's start-up, measured with -X importtime, paid
# by predict/evaluate/serve even for models that are not VGG (torchvision.models.vgg: ~3.9 s
# with torch, measured under load).
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]
VGG16_MIN_INPUT = 2 ** VGG16_CFG.count("M")  # padded 3x3 convs keep the size; pools halve it
VGG16_PAPER_INPUT = 128  # the paper trains VGG16 on the same 128 px images as MV3 (V)
_HIDDEN = 4096


def _torchvision_init(model: nn.Module) -> None:
    # Same rules as torchvision's VGG.__init__(init_weights=True).
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build_vgg16(
    num_classes: int,
    *,
    width: float = 1.0,
    in_channels: int = 3,
    dropout: float | None = None,
) -> nn.Module:
    """torchvision VGG16 (no weights) with the class count, width and input channels adapted."""
    from torchvision.models.vgg import VGG, make_layers  # lazy: see VGG16_CFG

    target = torch.get_default_device()  # "meta" when counting parameters cheaply
    cfg = [v if v == "M" else scaled(int(v), width) for v in VGG16_CFG]
    last = cfg[-2]  # channels of the last convolution
    hidden = scaled(_HIDDEN, width)
    p = 0.5 if dropout is None else dropout
    # Assemble on the meta device, then allocate once: torchvision's VGG would otherwise
    # allocate and initialise a full-width 25088x4096 layer before we replace it.
    with torch.device("meta"):
        features = make_layers(cfg)
        if in_channels != 3:  # make_layers hard-codes RGB input
            features[0] = nn.Conv2d(in_channels, cfg[0], kernel_size=3, padding=1)
        model = VGG(features, num_classes=num_classes, init_weights=False, dropout=p)
        if last != 512 or hidden != _HIDDEN:
            model.classifier = nn.Sequential(
                nn.Linear(last * 7 * 7, hidden),
                nn.ReLU(True),
                nn.Dropout(p=p),
                nn.Linear(hidden, hidden),
                nn.ReLU(True),
                nn.Dropout(p=p),
                nn.Linear(hidden, num_classes),
            )
    model = model.to_empty(device=target)
    _torchvision_init(model)
    return model
