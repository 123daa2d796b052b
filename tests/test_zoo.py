"""The model zoo (issue 8): local pretrained weights, backbone freezing, a timm model end to end.

Every zoo model's forward/backward runs in test_models.py with the paper's tables; here: what
only zoo models need, and that train -> evaluate -> predict work unchanged for one of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from factories import cell_folder
from hemacnn.cli import main
from hemacnn.errors import HemacnnError
from hemacnn.models import build_model, count_parameters
from hemacnn.models.zoo import classifier_head, load_pretrained, set_backbone_trainable
from hemacnn.training.train import train


def test_timm_and_torchvision_builds_match_their_libraries() -> None:
    import timm
    import torchvision

    with torch.device("meta"):
        assert count_parameters(build_model("resnext50", 1000, 224)) == count_parameters(
            torchvision.models.resnext50_32x4d())
        assert count_parameters(build_model("timm/efficientnet_b0", 1000, 224)) == \
            count_parameters(timm.create_model("efficientnet_b0"))
        ours = build_model("timm/convnext_nano", 5, 64, in_channels=1, dropout=0.3)
    assert ours.hemacnn_arch["name"] == "timm/convnext_nano"
    assert ours.stem[0].in_channels == 1 and ours.head.drop.p == 0.3
    # timm names beyond the listed ones work too (names are timm's, case and all)
    assert build_model("timm/resnet10t", 3, 32)(torch.rand(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("bad", [{"width": 0.5}, {"noise_std": 1.0}])
def test_zoo_rejects_paper_only_options(bad: dict) -> None:
    with pytest.raises(HemacnnError, match="model resnet18 has no"):
        build_model("resnet18", 2, 32, **bad)


def test_load_pretrained_keeps_a_mismatched_head_random(tmp_path) -> None:
    torch.manual_seed(0)
    source = build_model("resnet18", 1000, 32)  # an "ImageNet" model: 1000 classes
    path = tmp_path / "imagenet.pt"
    torch.save(source.state_dict(), path)
    target = build_model("resnet18", 3, 32)
    head_before = target.fc.weight.clone()
    report = load_pretrained(target, path)
    assert report.kept_random == 2 and report.unused == 2  # fc.weight, fc.bias
    assert report.shape_mismatch == ("fc.weight", "fc.bias")
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert torch.equal(target.fc.weight, head_before)

    with pytest.raises(HemacnnError, match="not found"):
        load_pretrained(target, tmp_path / "missing.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(HemacnnError, match="holds no state dict"):
        load_pretrained(target, tmp_path / "list.pt")
    torch.save(build_model("mv2", 3, 46, width=0.1).state_dict(), tmp_path / "other.pt")
    with pytest.raises(HemacnnError, match="no tensor matches"):
        load_pretrained(target, tmp_path / "other.pt")


def test_freezing_leaves_only_the_head_trainable() -> None:
    for name, size in (("resnet18", 32), ("timm/efficientnet_b0", 32), ("mv2", 46)):
        model = build_model(name, 3, size, **({"width": 0.125} if name == "mv2" else {}))
        head = {id(p) for p in classifier_head(model).parameters()}
        assert set_backbone_trainable(model, False) > 0
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        assert trainable == head, name
        set_backbone_trainable(model, True)
        assert all(p.requires_grad for p in model.parameters())


@pytest.fixture(scope="module")
def cells_root(tmp_path_factory) -> Path:
    return cell_folder(tmp_path_factory.mktemp("cells"), 15, size=40, seed=1, digits=3)


def test_timm_model_with_local_weights_and_frozen_backbone_end_to_end(tmp_path, cells_root,
                                                                      capsys) -> None:
    torch.manual_seed(0)
    init = build_model("timm/resnet18", 1000, 32)
    weights = tmp_path / "resnet18.pt"
    torch.save(init.state_dict(), weights)
    cfg = {"name": "zoo", "seed": 0,
           "data": {"root": str(cells_root), "classes": ["BLA", "LYT", "NGS"],
                    "image_size": 32, "batch_size": 8},
           "model": {"name": "timm/resnet18", "weights": str(weights)},
           "optimizer": {"name": "adamw", "lr": 0.01},
           "trainer": {"max_epochs": 1, "patience": None, "accelerator": "cpu", "devices": 1},
           "recipe": {"freeze_backbone_epochs": 1}}
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = train(path, out=tmp_path / "run", progress=False)
    capsys.readouterr()  # train's epoch lines; the JSON below must be read alone

    # Self-describing and loadable without unpickling code.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    card = ckpt["hyper_parameters"]["card"]
    assert card["arch"]["name"] == "timm/resnet18" and card["init_weights"] == str(weights)
    sd = ckpt["state_dict"]
    # Frozen for the one epoch: the backbone is still the loaded file; the new head learned.
    assert torch.equal(sd["model.conv1.weight"], init.conv1.weight)
    assert torch.equal(sd["model.layer4.1.conv2.weight"], init.layer4[1].conv2.weight)
    assert sd["model.fc.weight"].shape == (3, 512)

    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["classes"] == ["BLA", "LYT", "NGS"] and result["n"] > 0
    image = next((cells_root / "LYT").glob("*.jpg"))
    assert main(["predict", str(run), str(image), "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)[0]
    assert pred["class"] in ("BLA", "LYT", "NGS") and 0 < pred["probability"] <= 1


def test_models_command_lists_zoo_models_with_counts(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, params in (("resnext50", "22,988,100"), ("resnet18", "11,178,564"),
                         ("timm/efficientnet_b0", "4,012,672")):
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert params in line, line
    assert "timm/<name>" in out
