"""The paper's architectures as layer tables, one row per layer, read top to bottom.

In the spirit of torchvision's ``vgg.cfgs``: the tables are data, and one builder
(:func:`hemacnn.models.builder.build_table`) walks any of them. Row kinds:

``("conv", C)`` / ``("conv", C, {"bn": True})``
    3x3 convolution to C channels, Keras ``padding="valid"`` (no padding), stride 1;
    optional BatchNorm after the convolution and before the activation (Section IV-C);
    always followed by ReLU (every convolution in Tables 2-4 has one).
``("maxpool", k)`` / ``("avgpool", k)``
    k x k pooling with stride k, remainder dropped (Keras ``padding="valid"``).
``("noise",)``
    Gaussian noise, mean 0, std = the ``noise_std`` option; only active in training
    (Keras ``GaussianNoise``). Left out entirely when ``noise_std`` is 0.
``("flatten",)``
    Keras ``Flatten`` before the first dense layer.
``("dense", N)``
    Fully connected to N units, followed by ReLU.
``("dropout", p)``
    Dropout with rate p (the ``dropout`` option overrides every rate of a table).
``("logits",)``
    The last dense layer, one unit per class, no activation: the model returns logits
    and the softmax of the paper's tables lives in the loss / prediction code.

Each conv/dense/logits row is one of the paper's numbered layers L0, L1, ...; the builder
names its modules after them (``L2_conv``, ``L2_bn``, ``L2_maxpool``) so that a state dict
can be read against the paper's table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Row = tuple[Any, ...]


@dataclass(frozen=True)
class PaperTable:
    """One architecture: its rows plus where it comes from in the paper."""

    name: str
    rows: tuple[Row, ...]
    paper_ref: str  # "Table 2 (IV-A)", shown by `hemacnn models`
    paper_input: int  # input size (pixels) the paper trained it at
    init: str  # "glorot_uniform" (Keras default) or "he_normal"
    note: str = ""  # shown by `hemacnn models`: what the table reconstructs beyond the text


# Table 2, Section IV-A: MV1 at 250 px (the dataset's native size).
# The paper does not name an initialiser for MV1, so it had Keras' default, glorot_uniform.
# Parameter count, 4 classes, 250 px: spatial sizes 250 -> 248 -> 82 -> 80 -> 26 -> 24 -> 8
# -> 6 -> 3, flatten 3*3*64 = 576.  Convs: 7,168 + 590,080 + 590,080 + 147,520 = 1,334,848;
# dense: 36,928 + 2,080 + 132 = 39,140; total 1,373,988, 3.3 % above the paper's "about
# 1.33 M". The convolutions alone give 1.33 M, so the paper's figure most likely left out
# the (small) dense head or rounded a differently sized variant; nothing in the text
# supports any other layer sizes, so the table follows the paper's Table 2 as printed.
MV1 = PaperTable(
    name="mv1",
    paper_ref="Table 2 (IV-A)",
    paper_input=250,
    init="glorot_uniform",
    rows=(
        ("conv", 256),  # L0
        ("maxpool", 3),
        ("conv", 256),  # L1
        ("maxpool", 3),
        ("conv", 256),  # L2
        ("maxpool", 3),
        ("conv", 64),  # L3
        ("maxpool", 2),
        ("flatten",),
        ("dense", 64),  # L4
        ("dropout", 0.5),
        ("dense", 32),  # L5
        ("logits",),  # L6: Dense 4 -> softmax in the paper
    ),
)

# Table 3, Section IV-C: MV2 at 128 px. BatchNorm after each convolution and before ReLU,
# 2x2 pooling (max after the first three convolutions, average after the fourth).
# Initialiser not stated: Keras default glorot_uniform.
MV2 = PaperTable(
    name="mv2",
    paper_ref="Table 3 (IV-C)",
    paper_input=128,
    init="glorot_uniform",
    rows=(
        ("conv", 256, {"bn": True}),  # L0
        ("maxpool", 2),
        ("conv", 256, {"bn": True}),  # L1
        ("maxpool", 2),
        ("conv", 128, {"bn": True}),  # L2
        ("maxpool", 2),
        ("conv", 128, {"bn": True}),  # L3
        ("avgpool", 2),
        ("flatten",),
        ("dense", 64),  # L4
        ("dropout", 0.4),
        ("dense", 32),  # L5
        ("logits",),  # L6
    ),
)

# Table 4, Section IV-D: MV3 at 128 px, 8 convolutions + 4 dense layers, HeNormal
# initialisation (IV-D). The ("noise",) rows are the Gaussian noise layers of Section IV-E,
# "before L1, L3, L6 and L8"; they only exist when the noise_std option is > 0 (the final
# model of Section V uses std 1).
MV3 = PaperTable(
    name="mv3",
    paper_ref="Table 4 (IV-D, IV-E)",
    paper_input=128,
    init="he_normal",
    rows=(
        ("conv", 256),  # L0 (no BN)
        ("noise",),
        ("conv", 256, {"bn": True}),  # L1
        ("conv", 256, {"bn": True}),  # L2
        ("maxpool", 2),
        ("noise",),
        ("conv", 128, {"bn": True}),  # L3
        ("conv", 128),  # L4 (no BN)
        ("conv", 128, {"bn": True}),  # L5
        ("maxpool", 2),
        ("noise",),
        ("conv", 64, {"bn": True}),  # L6
        ("conv", 64, {"bn": True}),  # L7
        ("maxpool", 2),
        ("flatten",),
        ("noise",),
        ("dense", 256),  # L8
        ("dense", 128),  # L9
        ("dropout", 0.5),
        ("dense", 64),  # L10
        ("logits",),  # L11: Dense 4 -> softmax in the paper
    ),
)

# The "modified MV2" of Section IV-C, trained on the NGB-balanced data (88.97 % best
# validation accuracy). The text gives only the changes from MV2: "fewer max-pool layers, two
# extra Conv 64 3x3 layers, one Dense 128, and 64 filters in L5". A RECONSTRUCTION; the choices
# the text leaves open, each stated here and in `hemacnn models`:
#  - "fewer max-pool layers": MV2's max-pool after L2 is dropped (the two after L0 and L1 stay,
#    the average pool after L3 stays), so the two new convolutions still see a 26 px map;
#  - the two extra Conv 64 3x3 (with BatchNorm, as every MV2 convolution) go after L3, where
#    they become L4 and L5: that is also how "64 filters in L5" holds;
#  - the Dense 128 goes first in the head (widths then fall 128 -> 64 -> 32, as in MV3);
#  - dropout 0.4, pooling kind, Glorot init and 128 px input are MV2's.
# At 128 px: 126 -> 63 -> 61 -> 30 -> 28 -> 26 -avgpool-> 13 -> 11 -> 9; flatten 9*9*64 = 5184.
MV2_MODIFIED = PaperTable(
    name="mv2mod",
    paper_ref="IV-C text (reconstruction)",
    paper_input=128,
    init="glorot_uniform",
    note=("reconstruction of IV-C's one-sentence 'modified MV2': MV2 without the max-pool "
          "after L2; two Conv 64 (+BN) after L3 = L4, L5 (so L5 has 64 filters); Dense 128 "
          "first in the head; other choices as MV2"),
    rows=(
        ("conv", 256, {"bn": True}),  # L0
        ("maxpool", 2),
        ("conv", 256, {"bn": True}),  # L1
        ("maxpool", 2),
        ("conv", 128, {"bn": True}),  # L2 (its max-pool dropped)
        ("conv", 128, {"bn": True}),  # L3
        ("avgpool", 2),
        ("conv", 64, {"bn": True}),  # L4 (extra)
        ("conv", 64, {"bn": True}),  # L5 (extra: "64 filters in L5")
        ("flatten",),
        ("dense", 128),  # L6 (extra)
        ("dense", 64),  # L7
        ("dropout", 0.4),
        ("dense", 32),  # L8
        ("logits",),  # L9
    ),
)

PAPER_TABLES: dict[str, PaperTable] = {t.name: t for t in (MV1, MV2, MV3, MV2_MODIFIED)}
