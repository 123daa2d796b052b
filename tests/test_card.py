"""The model card: one definition (ModelCard), its committed schema, one-line refusals of bad
cards, and old (hemacnn-card/1) cards in run folders, checkpoints and ONNX files still working."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from factories import model_card, save_checkpoint
from hemacnn.card import (
    CARD_FORMAT,
    OLD_FORMAT,
    ONNX_CARD_KEY,
    extend_card,
    migrate_card,
    parse_card,
    read_card,
)
from hemacnn.card.model import ModelCard, schema_text
from hemacnn.card.schema import ANNOTATIONS, KEYWORDS, MATEK_DATASET, SCHEMA_FILE, card_schema
from hemacnn.cli import main
from hemacnn.config import Config
from hemacnn.errors import HemacnnError
from hemacnn.inference.export import export_model
from hemacnn.inference.loading import load_checkpoint
from hemacnn.inference.onnxmodel import OnnxClassifier
from hemacnn.models import build_model
from hemacnn.training.train import make_card

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["BLA", "LYT", "NGS"]


def old_card(arch: dict, **extra) -> dict:
    """A card as hemacnn-card/1 code wrote it (git show 2b8ab6c:src/hemacnn/card.py)."""
    card = {"format": OLD_FORMAT, "classes": CLASSES,
            "class_names": ["blast", "lymphocyte", "segmented neutrophil"], "input_size": 48,
            "resize_method": "nearest", "value_range": [0, 1], "channels": "RGB",
            "arch": arch, "hemacnn_version": "0.1.0", "data_root": "/data/matek",
            "manifest_hash": "f" * 40, "seed": 0,
            "source_images": {"typical_size": [250, 250], "rgb_8bit": True}}
    return card | extra


@pytest.fixture(scope="module")
def card() -> dict:
    model = build_model("mv3", 3, 48, width=0.25)
    return model_card(CLASSES, model.hemacnn_arch, data_root="data/matek", seed=0)


# --------------------------------------------------------------------------- the schema

def test_the_committed_schema_is_the_model_card_s():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "ModelCard changed: write the schema again with `python -m hemacnn.card.model`")


def test_the_checker_knows_every_keyword_the_schema_uses():
    used: set[str] = set()

    def walk(node, names: bool = False) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not names:
                    used.add(key)
                walk(value, names=not names and key in ("properties", "$defs"))
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card_schema())
    assert used - KEYWORDS - ANNOTATIONS == set()


# --------------------------------------------------------------------------- new cards

def test_a_training_card_stores_the_normalisation_once_and_the_root_as_given():
    cfg = Config.model_validate({"model": {"input_mean": [0.5] * 3, "input_std": [0.25] * 3}})
    card = make_card(cfg, ["BLA", "LYT"], "hash", "../data/matek")
    assert card["format"] == CARD_FORMAT and "normalize" not in card
    assert card["arch"]["options"]["input_mean"] == [0.5] * 3
    assert card["data_root"] == "../data/matek"  # not resolved to this machine's path
    assert card["dataset"] == MATEK_DATASET and MATEK_DATASET["licence"] == "CC BY 4.0"
    assert card["outputs"] == {"raw": "logits", "probabilities": "softmax", "order": "classes"}
    assert "Not a medical device" in card["intended_use"]
    assert "metrics" not in card and "stain_norm" not in card  # absent, not null
    assert parse_card(json.loads(json.dumps(card)), "x") == card
    other = make_card(Config(), ["neutrophil", "platelet"], "hash", None)
    assert "dataset" not in other and other["data_root"] is None  # not a known dataset


def test_a_finished_run_records_its_test_figures_in_its_card(tiny_run):
    card = read_card(tiny_run)
    tested = json.loads((tiny_run / "test_metrics.json").read_text())
    assert card["metrics"] == {"split": "test", "images": tested["n"],
                               **{k: tested[k] for k in ("accuracy", "balanced_accuracy",
                                                         "macro_f1", "weighted_f1")},
                               "tta": False, "checkpoint": Path(tested["checkpoint"]).name}
    assert Path(tested["data"]).is_absolute()  # test_metrics.json is as it was
    ckpt_card = torch.load(tiny_run / "checkpoints" / "best.ckpt",
                           weights_only=True)["hyper_parameters"]["card"]
    assert ckpt_card["format"] == CARD_FORMAT and "metrics" not in ckpt_card  # saved before
    assert parse_card(ckpt_card, "ckpt") == ckpt_card


def test_an_export_carries_the_figures_of_its_own_checkpoint_only(tiny_run, tmp_path):
    best = json.loads(export_model(tiny_run, tmp_path / "best")["card"].read_text())
    assert best["metrics"] == read_card(tiny_run)["metrics"]
    last = export_model(tiny_run / "checkpoints" / "last.ckpt", tmp_path / "last")
    assert "metrics" not in json.loads(last["card"].read_text())  # measured on best.ckpt


# --------------------------------------------------------------------------- bad cards

BAD = [  # (change, the field the one-line error names)
    (lambda c: c.pop("classes"), "'classes' is missing"),
    (lambda c: c["arch"].pop("input_size"), "'arch.input_size' is missing"),
    (lambda c: c.update(input_size="48"), "'input_size'"),
    (lambda c: c.update(input_size=True), "'input_size'"),
    (lambda c: c.update(seed=1.5), "'seed'"),
    (lambda c: c.update(classes=["BLA", 3, "NGS"]), "'classes[1]'"),
    (lambda c: c.update(resize_method="cubic"), "'resize_method'"),
    (lambda c: c.update(value_range=[0, 1, 2]), "'value_range'"),
    (lambda c: c.update(stain_norm={"method": "reinhard"}), "'stain_norm.target_means'"),
    (lambda c: c.update(notes="mine"), "'notes' is not a model card field"),
    (lambda c: c.update(class_names=["blast"]), "'class_names'"),
    (lambda c: c["arch"].update(num_classes=4), "'arch.num_classes'"),
]


@pytest.mark.parametrize("change, field", BAD)
def test_a_bad_card_is_one_line_naming_the_file_and_the_field(card, change, field):
    bad = json.loads(json.dumps(card))
    change(bad)
    with pytest.raises(HemacnnError) as err:
        parse_card(bad, "runs/x/model_card.json")
    message = str(err.value)
    assert "\n" not in message and message.startswith("runs/x/model_card.json holds a bad ")
    assert field in message
    with pytest.raises(HemacnnError, match=field.replace("[", r"\[")):  # ModelCard agrees
        extend_card(bad)


def test_a_bad_card_in_a_run_folder_is_one_error_line_from_the_cli(card, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_card.json").write_text(json.dumps({**card, "input_size": "big"}))
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(run / "model_card.json") in err and "'input_size'" in err


def test_an_unknown_format_is_refused_and_a_foreign_file_is_not_a_card(card):
    with pytest.raises(HemacnnError, match="format hemacnn-card/9, which hemacnn"):
        parse_card({**card, "format": "hemacnn-card/9"}, "m.json")
    for foreign in ({"classes": CLASSES}, [1, 2], None):
        with pytest.raises(HemacnnError, match="m.json is not a hemacnn model"):
            parse_card(foreign, "m.json")


# --------------------------------------------------------------------------- old cards

def test_every_committed_old_card_migrates():
    files = subprocess.run(["git", "ls-files", "*model_card.json"], cwd=REPO, text=True,
                           capture_output=True, check=True).stdout.split()
    assert files, "no committed run folder with a model card"
    for name in files:
        old = json.loads((REPO / name).read_text(encoding="utf-8"))
        card = parse_card(old, name)
        assert card["format"] == CARD_FORMAT and "normalize" not in card
        if "normalize" in old:  # kept once, where it builds the network
            assert card["arch"]["options"]["input_mean"] == old["normalize"]["mean"]
            assert card["arch"]["options"]["input_std"] == old["normalize"]["std"]
        kept = set(old) - {"format", "normalize"}  # everything else as /1 wrote it
        assert {k: card[k] for k in kept} == {k: old[k] for k in kept}
        ModelCard.model_validate(card)  # the migration gives what the model accepts


def test_an_old_checkpoint_loads_with_its_normalisation(tmp_path):
    torch.manual_seed(0)
    model = build_model("mv3", 3, 48, width=0.25, input_mean=[0.5] * 3, input_std=[0.25] * 3)
    arch = json.loads(json.dumps(model.hemacnn_arch))
    card = old_card(arch, normalize={"mean": [0.5] * 3, "std": [0.25] * 3})
    ckpt = save_checkpoint(tmp_path / "checkpoints" / "best.ckpt", model, card)
    loaded, new = load_checkpoint(ckpt, device="cpu", prepare=False)
    assert new == migrate_card(card) and new["format"] == CARD_FORMAT
    assert new["dataset"] == MATEK_DATASET and new["data_root"] == "/data/matek"
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))  # normalised inside, as before


def _tiny_onnx(path: Path, card: dict) -> Path:
    """A three-class ONNX graph (the mean of each colour channel) carrying ``card``."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 48, 48])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
                               helper.make_node("Flatten", ["pooled"], ["logits"])],
                              "tiny", [image], [logits])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_CARD_KEY, json.dumps(card)
    onnx.save(proto, str(path))
    return path


def test_an_old_onnx_export_still_predicts(tmp_path):
    arch = {"name": "mv3", "num_classes": 3, "input_size": 48, "options": {"width": 0.25}}
    card = old_card(arch, source_checkpoint={"file": "best.ckpt", "bytes": 1, "sha256": "0"},
                    onnx={"input": "image", "output": "logits",
                          "input_layout": "NCHW float32 RGB in [0, 1]",
                          "input_shape": ["batch", 3, 48, 48], "opset": 17})
    clf = OnnxClassifier(_tiny_onnx(tmp_path / "model.onnx", card))
    assert clf.card["format"] == CARD_FORMAT and clf.card["onnx"] == card["onnx"]
    red = np.zeros((1, 48, 48, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert clf.probs(red).argmax() == 0  # output i is classes[i]
    bad = _tiny_onnx(tmp_path / "bad.onnx", {**card, "classes": "BLA"})
    with pytest.raises(HemacnnError, match="bad.onnx holds a bad model card: field 'classes'"):
        OnnxClassifier(bad)
