"""Config loading: YAML + dotted overrides, unknown keys and wrong types rejected by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from hemacnn.cli import main
from hemacnn.config import build_config, dump_config, load_config, parse_override, same_config
from hemacnn.errors import HemacnnError

REPO = Path(__file__).resolve().parents[1]


def test_overrides_are_read_as_yaml_values():
    cfg = build_config({}, ["data.classes=[BLA,LYT,NGS]", "optimizer.lr=1e-4",
                            "model.noise_std=1", "trainer.precision=bf16"])
    assert cfg.data.classes == ["BLA", "LYT", "NGS"]
    assert cfg.optimizer.lr == pytest.approx(1e-4)
    assert cfg.model.noise_std == 1.0
    assert cfg.trainer.precision == "bf16"


def test_defaults_follow_the_paper():
    cfg = build_config({})
    assert cfg.data.classes == ["BLA", "LYT", "NGB", "NGS"]
    assert (cfg.data.test_fraction, cfg.data.val_fraction, cfg.data.batch_size) == (0.1, 0.2, 32)
    assert cfg.data.resize == "nearest"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.colour=1", "unknown config key data.colour"),
        ("trainer.epochs=3", "unknown config key trainer.epochs"),
        ("data.image_size=big", "config key data.image_size"),
        ("optimizer.name=rmsprop", "config key optimizer.name"),
        ("data.test_fraction=1.5", "config key data.test_fraction"),
        ("noequals", "is not key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, expected):
    with pytest.raises(HemacnnError, match=expected):
        build_config({}, [override])


def test_offline_rotate_must_name_selected_classes():
    with pytest.raises(HemacnnError, match="offline_rotate"):
        build_config({}, ["data.classes=[BLA,LYT]", "data.offline_rotate=[NGB]"])


def test_parse_override_keeps_plain_strings():
    assert parse_override("data.root=/tmp/x y") == ("data.root", "/tmp/x y")


def test_dump_then_load_round_trips(tmp_path):
    cfg = build_config({"name": "t"}, ["model.width=0.5", "data.classes=[BLA,LYT]"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_bad_yaml_and_missing_file_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not valid YAML" in err and "\n" not in err
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


# Study files (configs/studies/) are not run configs; tests/test_study_files.py checks them.
@pytest.mark.parametrize("path", sorted(p for p in (REPO / "configs").rglob("*.yaml")
                                        if "studies" not in p.parts), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path, ["data.root=/nonexistent"])
    assert yaml.safe_load(path.read_text())  # non-empty
    from hemacnn.models import list_models

    assert cfg.model.name in list_models() or cfg.model.name.startswith("timm/")


# pycls style: every shipped config builds its model, whose size is pinned to hand arithmetic
# (paper models: see tests/test_models.py; quick: MV3 at width 0.25, 64 px, 3 classes =
# 120,000 conv/BN + 11,939 dense parameters).
CONFIG_PARAMS = {
    "quick.yaml": 131_939,
    "mv1.yaml": 1_373_988,
    "mv2.yaml": 1_338_596,
    "mv3.yaml": 3_914_180,
    "vgg16.yaml": 134_276_932,
    # fast: timm RegNetY-400MF (4,344,144 with its 1000-class head of 440 x 1000 + 1000, so a
    # 3,903,144 trunk) + 440 x 8 + 8
    "fast.yaml": 3_906_672,
    # finetune_mnv2: timm MobileNetV2 1.0 (3,504,872 with its 1000-class head of 1280 x 1000 +
    # 1000, so a 2,223,872 trunk) + 1280 x 8 + 8; the input normalisation has no parameters
    "finetune_mnv2.yaml": 2_234_120,
    # finetune: timm EfficientNet-Lite0 (4,652,008 with its 1000-class head, so a 3,371,008
    # trunk) + 1280 x 8 + 8
    "finetune.yaml": 3_381_256,
}


@pytest.mark.parametrize("name", sorted(CONFIG_PARAMS))
def test_shipped_config_builds_its_model(name):
    from hemacnn.models import build_model, count_parameters

    path = next((REPO / "configs").rglob(name))
    cfg = load_config(path, ["data.root=/nonexistent"])
    with torch.device("meta"):  # sizes only: VGG16's 134 M parameters need no real memory
        model = build_model(cfg.model.name, len(cfg.data.classes), cfg.data.image_size,
                            width=cfg.model.width, noise_std=cfg.model.noise_std)
    assert count_parameters(model) == CONFIG_PARAMS[name]


def test_overrides_may_follow_options(monkeypatch):
    import hemacnn.training.train

    seen = {}
    monkeypatch.setattr(hemacnn.training.train, "train",
                        lambda config, overrides, **kw: seen.update(c=config, ov=overrides,
                                                                    **kw) or Path("x"))
    assert main(["train", "c.yaml", "a.b=1", "--no-progress", "model.width=0.5"]) == 0
    assert seen["c"] == "c.yaml" and seen["ov"] == ["a.b=1", "model.width=0.5"]
    assert main(["train", "--resume", "R", "trainer.max_epochs=9"]) == 0
    assert seen["c"] is None and seen["resume"] == "R" and seen["ov"] == ["trainer.max_epochs=9"]
    with pytest.raises(SystemExit):
        main(["train", "c.yaml", "--bogus"])


@pytest.mark.parametrize("override", ["optimizer.lr=abc", "data.clases=[BLA,LYT]",
                                      "data.classes=[BLA]"])
def test_override_errors_name_the_override_not_the_file(tmp_path, capsys, override):
    cfg = tmp_path / "quick.yaml"
    cfg.write_text("data:\n  classes: [BLA, LYT, NGS]\noptimizer:\n  lr: 0.001\n")
    assert main(["train", str(cfg), override, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: command-line override {override}: "), err
    assert str(cfg) not in err and len(err.splitlines()) == 1


def test_errors_in_the_file_still_name_the_file(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("optimizer:\n  lr: abc\n")
    with pytest.raises(HemacnnError, match=rf"^{cfg}: config key optimizer.lr"):
        load_config(cfg, ["model.width=0.5"])


def test_a_rule_across_keys_blames_the_overrides_that_break_it(tmp_path, capsys):
    cfg = tmp_path / "fast.yaml"
    cfg.write_text("data:\n  classes: [BLA, LYT]\n  image_size: 128\n"
                   "model:\n  name: timm/resnet18\n")
    args = ["train", str(cfg), "data.root=/nowhere", "optimizer.lr=0.01"]
    assert main([*args, "recipe.progressive=[200,3]", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: command-line override recipe.progressive=[200,3]: recipe.progressive "
                   "[200, 3.0] needs 8 <= start px < data.image_size (128) and epochs > 0")
    # Two overrides each needed for the clash are both named; the harmless ones are not.
    assert main([*args, "recipe.progressive=[100,3]", "data.image_size=64",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: command-line overrides recipe.progressive=[100,3] "
                          "data.image_size=64: "), err
    assert "data.root" not in err and "optimizer.lr" not in err


def test_same_config_takes_a_folder_written_before_an_option_existed():
    cfg = load_config("configs/quick.yaml")
    text = dump_config(cfg)
    assert same_config(text, cfg)
    older = yaml.safe_load(text)
    del older["trainer"]["export"]  # an option added later: the older folder had its default
    assert same_config(yaml.safe_dump(older, sort_keys=False), cfg)
    changed = yaml.safe_load(text)
    changed["optimizer"]["lr"] = 0.5
    assert not same_config(yaml.safe_dump(changed), cfg)
    unknown = yaml.safe_load(text)
    unknown["trainer"]["no_such_option"] = 1
    assert not same_config(yaml.safe_dump(unknown), cfg)
    assert not same_config("{not: [yaml", cfg)
    # an option that does not hold its default in the older file is another config
    moved = load_config("configs/quick.yaml", ["trainer.export=never"])
    assert not same_config(yaml.safe_dump(older, sort_keys=False), moved)
