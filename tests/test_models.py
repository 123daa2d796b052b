"""Models: every registered architecture trains (timm style); parameter counts are pinned
against hand arithmetic (pycls style); noise, init, L2 and error messages behave as the
paper and Keras define them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from hemacnn.cli import main
from hemacnn.errors import HemacnnError
from hemacnn.models import (
    GaussianNoise,
    build_model,
    count_parameters,
    kernel_weights,
    l2_penalty,
    list_models,
    min_input_size,
    models_table,
)
from hemacnn.models.zoo import TIMM_LISTED, TORCHVISION_MODELS

ZOO = {*TORCHVISION_MODELS, *TIMM_LISTED}


def conv(cin: int, cout: int) -> int:
    """Parameters of a 3x3 convolution with bias."""
    return 9 * cin * cout + cout


def dense(cin: int, cout: int) -> int:
    return cin * cout + cout


def bn(c: int) -> int:
    return 2 * c  # gamma and beta; running mean/var are buffers, not trainable


# Hand arithmetic, 4 classes, valid 3x3 convs (side - 2), pools floor(side / k).
# MV1 @ 250: 250 -conv-> 248 -pool3-> 82 -> 80 -> 26 -> 24 -> 8 -> 6 -pool2-> 3; flatten 576.
MV1_PARAMS = (conv(3, 256) + conv(256, 256) * 2 + conv(256, 64)
              + dense(3 * 3 * 64, 64) + dense(64, 32) + dense(32, 4))
# MV2 @ 128: 128 -> 126 -> 63 -> 61 -> 30 -> 28 -> 14 -> 12 -avgpool2-> 6; flatten 4608.
MV2_PARAMS = (conv(3, 256) + conv(256, 256) + conv(256, 128) + conv(128, 128)
              + bn(256) * 2 + bn(128) * 2
              + dense(6 * 6 * 128, 64) + dense(64, 32) + dense(32, 4))
# MV3 @ 128: 128 -> 126 -> 124 -> 122 -> 61 -> 59 -> 57 -> 55 -> 27 -> 25 -> 23 -> 11;
# flatten 11 * 11 * 64 = 7744. BN on L1, L2, L3, L5, L6, L7 (not L0, L4).
MV3_PARAMS = (conv(3, 256) + conv(256, 256) * 2 + conv(256, 128) + conv(128, 128) * 2
              + conv(128, 64) + conv(64, 64)
              + bn(256) * 2 + bn(128) * 2 + bn(64) * 2
              + dense(11 * 11 * 64, 256) + dense(256, 128) + dense(128, 64) + dense(64, 4))


def test_written_figures_match_hand_arithmetic() -> None:
    # The figures written elsewhere: the total in tables.py's MV1 comment and the pycls-style
    # pins of the shipped paper configs (tests/test_config.py), so a typo in either shows up.
    from test_config import CONFIG_PARAMS

    tables = (Path(__file__).resolve().parents[1] / "src" / "hemacnn" / "models"
              / "tables.py").read_text(encoding="utf-8")
    assert f"total {MV1_PARAMS:,}" in tables
    assert (CONFIG_PARAMS["mv1.yaml"], CONFIG_PARAMS["mv2.yaml"], CONFIG_PARAMS["mv3.yaml"]) == (
        MV1_PARAMS, MV2_PARAMS, MV3_PARAMS)


@pytest.mark.parametrize(("name", "size", "expected"), [
    ("mv1", 250, MV1_PARAMS),
    ("mv2", 128, MV2_PARAMS),
    ("mv3", 128, MV3_PARAMS),
])
def test_parameter_counts_at_paper_sizes(name: str, size: int, expected: int) -> None:
    model = build_model(name, 4, size)  # real CPU build: these are small enough
    assert count_parameters(model) == expected


def test_models_command_shows_mv1_within_5_percent_of_paper(capsys) -> None:
    # Section IV-A: "about 1.33 M trainable parameters" for MV1 at 250 px, 4 classes, as a
    # user reads it from `hemacnn models` (its own input size and its own count).
    assert main(["models"]) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines()
               if line.startswith("mv1 "))
    assert "250" in row
    n = int(next(c for c in row if c.replace(",", "").isdigit() and "," in c).replace(",", ""))
    assert abs(n - 1.33e6) / 1.33e6 < 0.05


def test_vgg16_is_torchvision_vgg16_at_full_width() -> None:
    with torch.device("meta"):
        ours = build_model("vgg16", 4, 128)
        ref = torchvision.models.vgg16(weights=None, num_classes=4)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert count_parameters(ours) == 134_276_932  # 138,357,544 - 4096*996 - 996


def test_vgg16_table_is_torchvision_cfg_d() -> None:
    from torchvision.models.vgg import cfgs

    from hemacnn.models.vgg import VGG16_CFG

    assert VGG16_CFG == cfgs["D"]


def _tiny(name: str) -> tuple[nn.Module, int]:
    """A CPU-sized variant at the smallest input the architecture accepts."""
    size = min_input_size(name)
    opts = {"noise_std": 1.0} if name == "mv3" else {}
    if name in ZOO:  # ImageNet designs have no width option: full size at 32 px
        return build_model(name, 2, size), size
    return build_model(name, 2, size, width=0.125, **opts), size


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_every_model(name: str) -> None:
    torch.manual_seed(0)
    model, size = _tiny(name)
    model.train()
    x = torch.rand(3, 3, size, size)
    out = model(x)
    assert out.shape == (3, 2)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([0, 1, 0])).backward()
    for pname, p in model.named_parameters():
        # Non-None and finite; not "non-zero": a conv bias right before BatchNorm gets an
        # (exactly) zero gradient, since BN subtracts the batch mean.
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize(("name", "minimum"), [
    ("mv1", 134),  # backwards from 1: pool2 -> 2, conv -> 4, pool3 -> 12, conv -> 14, ...
    ("mv2", 46),
    ("mv3", 42),
    ("vgg16", 32),  # five 2x2 pools, padded convs
])
def test_minimum_input_size(name: str, minimum: int) -> None:
    assert min_input_size(name) == minimum
    with torch.device("meta"):
        build_model(name, 2, minimum)
    with pytest.raises(HemacnnError, match=rf"model {name} needs input_size >= {minimum} "
                                           rf"\(got {minimum - 1}\)"):
        build_model(name, 2, minimum - 1)


def test_flatten_sizes_follow_keras_valid_arithmetic() -> None:
    with torch.device("meta"):
        assert build_model("mv1", 4, 250).L4_dense.in_features == 3 * 3 * 64
        assert build_model("mv2", 4, 128).L4_dense.in_features == 6 * 6 * 128
        assert build_model("mv3", 4, 128).L8_dense.in_features == 11 * 11 * 64
        assert build_model("mv3", 4, 64).L8_dense.in_features == 3 * 3 * 64  # 64->...->3


def test_output_shape_at_odd_size_and_width() -> None:
    model = build_model("mv3", 5, 57, width=0.1).eval()  # remainders dropped at each pool
    assert model(torch.rand(2, 3, 57, 57)).shape == (2, 5)
    assert model.L0_conv.out_channels == 26  # round(25.6)
    assert model.L7_conv.out_channels == 6  # round(6.4)
    tiny = build_model("mv2", 3, 46, width=0.001)  # every width floors at 1 channel
    assert {m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv2d)} == {1}
    assert tiny(torch.rand(2, 3, 46, 46)).shape == (2, 3)


def test_in_channels_and_dropout_options() -> None:
    for name in ("mv2", "vgg16"):
        size = min_input_size(name)
        model = build_model(name, 2, size, width=0.125, in_channels=1, dropout=0.2).eval()
        assert model(torch.rand(2, 1, size, size)).shape == (2, 2)
        rates = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
        assert rates == {0.2}
    assert {m.p for m in build_model("mv2", 2, 46).modules()
            if isinstance(m, nn.Dropout)} == {0.4}  # Table 3's rate by default


def test_noise_layers_at_the_papers_four_places() -> None:
    model = build_model("mv3", 4, 64, width=0.125, noise_std=1.0)
    names = list(dict(model.named_children()))
    noise = [n for n, m in model.named_children() if isinstance(m, GaussianNoise)]
    assert noise == ["L1_noise", "L3_noise", "L6_noise", "L8_noise"]
    for n, nxt in zip(noise, ("L1_conv", "L3_conv", "L6_conv", "L8_dense"), strict=True):
        assert names[names.index(n) + 1] == nxt  # right before that layer
    assert all(m.std == 1.0 for m in model.modules() if isinstance(m, GaussianNoise))
    plain = build_model("mv3", 4, 64, width=0.125)
    assert not any(isinstance(m, GaussianNoise) for m in plain.modules())


def test_noise_only_in_training() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 3, 48, 48)
    # dropout=0 so that noise is the only source of randomness in train mode
    noisy = build_model("mv3", 2, 48, width=0.125, noise_std=1.0, dropout=0.0)
    clean = build_model("mv3", 2, 48, width=0.125, noise_std=0.0, dropout=0.0)
    noisy.eval()
    assert torch.equal(noisy(x), noisy(x))
    noisy.train()
    assert not torch.allclose(noisy(x), noisy(x))
    clean.train()
    assert torch.equal(clean(x), clean(x))


def test_gaussian_noise_statistics() -> None:
    torch.manual_seed(0)
    layer = GaussianNoise(0.5).train()
    x = torch.zeros(200_000)
    d = layer(x) - x
    assert abs(d.mean().item()) < 0.01
    assert d.std().item() == pytest.approx(0.5, rel=0.02)
    assert torch.equal(layer.eval()(x), x)


def test_noise_rejected_where_the_table_has_none() -> None:
    for name in ("mv1", "vgg16"):
        with pytest.raises(HemacnnError, match="noise"):
            build_model(name, 2, min_input_size(name), width=0.125, noise_std=1.0)


def test_he_normal_matches_keras() -> None:
    torch.manual_seed(0)
    w = build_model("mv3", 4, 128).L1_conv  # 256*256*9 = 589,824 weights
    fan_in = 256 * 9
    std = math.sqrt(2 / fan_in)  # Keras: std of the *truncated* samples is sqrt(2/fan_in)
    assert w.weight.std().item() == pytest.approx(std, rel=0.02)
    assert abs(w.weight.mean().item()) < 0.01 * std
    # truncated at 2 sigma of the underlying normal (sigma = std / 0.8796)
    assert w.weight.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-7
    assert torch.count_nonzero(w.bias) == 0


def test_glorot_uniform_for_mv1_keras_default() -> None:
    torch.manual_seed(0)
    w = build_model("mv1", 4, 250).L1_conv.weight
    limit = math.sqrt(6 / (256 * 9 + 256 * 9))
    assert w.abs().max().item() <= limit
    assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.02)


def test_l2_penalty_is_keras_l2_on_kernels_only() -> None:
    torch.manual_seed(0)
    model = build_model("mv2", 3, 46, width=0.25)
    lam = 0.01
    sd = model.state_dict()
    expected = lam * sum(float((v.double() ** 2).sum()) for k, v in sd.items()
                         if k.endswith(("_conv.weight", "_dense.weight")))
    got = l2_penalty(model, lam)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    weights = kernel_weights(model)
    assert len(weights) == 4 + 3  # Table 3: four convolutions, three dense layers
    bn_and_bias = [p for n, p in model.named_parameters() if "_bn." in n or n.endswith("bias")]
    assert bn_and_bias and not any(p is w for p in bn_and_bias for w in weights)
    got.backward()
    # d/dw lam*w^2 = 2*lam*w: Keras lam 0.01 equals PyTorch weight_decay 0.02 on the gradient
    assert torch.allclose(model.L0_conv.weight.grad, 2 * lam * model.L0_conv.weight)
    assert model.L0_bn.weight.grad is None and model.L0_conv.bias.grad is None
    assert len(kernel_weights(build_model("vgg16", 2, 32, width=0.0625))) == 13 + 3


def test_bf16_autocast_cpu_forward_backward() -> None:
    torch.manual_seed(0)
    model = build_model("mv3", 2, 48, width=0.125, noise_std=1.0).train()
    x, y = torch.rand(4, 3, 48, 48), torch.tensor([0, 1, 1, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = nn.functional.cross_entropy(out, y) + l2_penalty(model, 0.01)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_arch_rebuilds_the_model() -> None:
    model = build_model("mv3", 3, 64, width=0.25, noise_std=0.5)
    arch = json.loads(json.dumps(model.hemacnn_arch))  # survives a JSON model card
    assert arch == {"name": "mv3", "num_classes": 3, "input_size": 64,
                    "options": {"width": 0.25, "noise_std": 0.5, "in_channels": 3,
                                "dropout": None, "bn_momentum": None}}
    again = build_model(**arch)
    again.load_state_dict(model.state_dict())  # same keys and shapes
    assert again.hemacnn_arch == arch


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(HemacnnError, match=r"unknown model 'resnet99'; known models: "
                                           r"mobilenet_v2, mv1, mv2, mv2mod, mv3, resnet18, "
                                           r".*vgg16, or timm/"):
        build_model("resnet99", 4, 128)
    with pytest.raises(HemacnnError, match=r"'timm/no_such_net'; timm knows no model"):
        build_model("timm/no_such_net", 4, 128)


def test_unknown_option_names_it_and_the_valid_ones() -> None:
    with pytest.raises(HemacnnError, match=r"unknown option 'depth' for model mv3; valid "
                                           r"options: bn_momentum, dropout, in_channels, "
                                           r"input_mean, input_std, noise_std, width"):
        build_model("mv3", 4, 128, depth=3)
    with pytest.raises(HemacnnError, match="unknown option 'widht'"):
        min_input_size("mv2", widht=0.5)


@pytest.mark.parametrize("bad", [
    {"width": 0}, {"width": "big"}, {"noise_std": -1.0}, {"in_channels": 0},
    {"in_channels": 1.5}, {"dropout": 1.0}, {"bn_momentum": 1.0}, {"bn_momentum": -0.1},
])
def test_bad_option_values(bad: dict) -> None:
    key = next(iter(bad))
    with pytest.raises(HemacnnError, match=key):
        build_model("mv3", 4, 64, **bad)


def test_bad_class_count() -> None:
    with pytest.raises(HemacnnError, match="num_classes"):
        build_model("mv3", 0, 64)


def test_models_command_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert name in out
    assert f"{MV1_PARAMS:,}" in out and f"{MV3_PARAMS:,}" in out
    assert models_table() == out.rstrip("\n")


def test_noise_keeps_channels_last_layout_and_distribution():
    from hemacnn.models.builder import GaussianNoise

    noise = GaussianNoise(1.0).train()
    x = torch.zeros(8, 16, 32, 32).contiguous(memory_format=torch.channels_last)
    y = noise(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert abs(float(y.mean())) < 0.02 and abs(float(y.std()) - 1.0) < 0.02
    # Each position draws its own value: no channel or pixel repeats another.
    assert not torch.equal(y[:, 0], y[:, 1]) and not torch.equal(y[:, :, 0], y[:, :, 1])


# Modified MV2 (IV-C, a reconstruction) @ 128: 128 -> 126 -pool2-> 63 -> 61 -pool2-> 30 -> 28
# -> 26 -avgpool2-> 13 -> 11 -> 9; flatten 9 * 9 * 64 = 5184. BN after every convolution.
MV2MOD_PARAMS = (conv(3, 256) + conv(256, 256) + conv(256, 128) + conv(128, 128)
                 + conv(128, 64) + conv(64, 64) + bn(256) * 2 + bn(128) * 2 + bn(64) * 2
                 + dense(9 * 9 * 64, 128) + dense(128, 64) + dense(64, 32) + dense(32, 4))


def test_modified_mv2_reconstruction() -> None:
    model = build_model("mv2mod", 4, 128)
    assert count_parameters(model) == MV2MOD_PARAMS == 1_826_532
    assert model.L5_conv.out_channels == 64  # "64 filters in L5"
    assert model.L6_dense.out_features == 128  # "one Dense 128"
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2  # MV2 has 3
    assert "reconstruction" in models_table() and "mv2mod" in models_table()


@pytest.mark.parametrize("name", ["mv2", "mv2mod", "mv3"])
def test_batchnorm_has_keras_defaults(name: str) -> None:
    # Keras BatchNormalization(momentum=0.99, epsilon=1e-3); PyTorch's momentum is the weight of
    # the new batch, so Keras 0.99 is PyTorch 0.01.
    with torch.device("meta"):
        bns = [m for m in build_model(name, 4, 128).modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.01 and m.eps == 1e-3 for m in bns)


def _batch_norms(model: nn.Module) -> list[nn.Module]:
    kinds = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    return [m for m in model.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize("name, own", [("mv3", 0.01), ("resnet18", 0.1),
                                       ("timm/efficientnet_b0", 0.1)])
def test_bn_momentum_reaches_every_batchnorm_layer(name: str, own: float) -> None:
    # Keras convention: 0.9 keeps 90% of the old running value, which is PyTorch's 0.1.
    with torch.device("meta"):
        model = build_model(name, 4, 64, bn_momentum=0.9)
        default = build_model(name, 4, 64)
    bns = _batch_norms(model)
    assert len(bns) >= 5  # mv3 has five, the zoo models dozens (timm's are subclasses)
    assert [m.momentum for m in bns] == [0.1] * len(bns)
    # Without the option each keeps its own: the paper's tables Keras' default 0.99 (PyTorch
    # 0.01), the zoo its library's PyTorch 0.1, so existing zoo configs train as they did.
    assert {m.momentum for m in _batch_norms(default)} == {own}
    assert model.hemacnn_arch["options"]["bn_momentum"] == 0.9


def test_bn_momentum_in_a_config_round_trips_into_the_card() -> None:
    from hemacnn.config import build_config
    from hemacnn.training.train import make_card

    cfg = build_config({"model": {"name": "mv3", "width": 0.125, "bn_momentum": 0.95}})
    card = json.loads(json.dumps(make_card(cfg, ["BLA", "LYT"], "hash", "/data")))  # as saved
    assert card["arch"]["options"]["bn_momentum"] == 0.95
    arch = card["arch"]
    rebuilt = build_model(arch["name"], arch["num_classes"], arch["input_size"],
                          **arch["options"])
    assert {m.momentum for m in _batch_norms(rebuilt)} == {0.05}
