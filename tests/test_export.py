"""ONNX export: parity with PyTorch on real cells, dynamic batch, card, predict on the file."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from hemacnn.cli import main
from hemacnn.data.images import preprocess_image
from hemacnn.errors import HemacnnError
from hemacnn.inference.loading import load_checkpoint, predict_arrays
from hemacnn.inference.onnxmodel import OnnxClassifier


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert main(["export", str(trained_run), "--format", "onnx", "--out", str(out)]) == 0
    return out


def test_onnx_runtime_agrees_with_pytorch_on_real_images(trained_run, exported, sample_root):
    files = [f for c in ("BLA", "LYT", "NGS") for f in sorted((sample_root / c).rglob("*.jpg"))
             [:20]]
    model, card = load_checkpoint(trained_run, prepare=False)
    images = np.stack([preprocess_image(f, card["input_size"]) for f in files])
    ref = predict_arrays(model, images, precision="fp32")
    onnx = OnnxClassifier(exported / "model.onnx")
    for batch in (1, 7, 64):  # dynamic batch size, including a ragged last batch
        got = onnx.probs(images, batch_size=batch)
        assert np.abs(got - ref).max() <= 1e-4
    assert (got.argmax(1) == ref.argmax(1)).all()
    np.testing.assert_allclose(onnx.probs(images[:5], tta=True),
                               predict_arrays(model, images[:5], tta=True, precision="fp32"),
                               atol=1e-4)


def test_card_beside_and_inside_the_onnx_file(trained_run, exported):
    card = json.loads((exported / "model_card.json").read_text())
    run_card = json.loads((trained_run / "model_card.json").read_text())
    assert card["classes"] == run_card["classes"] and card["input_size"] == 48
    assert card["onnx"]["input_shape"][0] == "batch"
    (exported / "model_card.json").rename(exported / "card.bak")  # the file alone still works
    try:
        assert OnnxClassifier(exported / "model.onnx").card["classes"] == card["classes"]
    finally:
        (exported / "card.bak").rename(exported / "model_card.json")


def test_predict_on_onnx_gives_the_checkpoint_classes(trained_run, exported, sample_root,
                                                      tmp_path):
    folder = sample_root / "NGS"
    a, b = tmp_path / "ckpt.csv", tmp_path / "onnx.csv"
    assert main(["predict", str(trained_run), str(folder), "--out", str(a),
                 "--precision", "fp32"]) == 0
    assert main(["predict", str(exported / "model.onnx"), str(folder), "--out", str(b)]) == 0
    ra, rb = list(csv.DictReader(a.open())), list(csv.DictReader(b.open()))
    assert len(ra) == len(rb) > 100
    assert [r["class"] for r in ra] == [r["class"] for r in rb]


def test_a_broken_onnx_file_is_one_error(tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_text("nope")
    with pytest.raises(HemacnnError, match="cannot load ONNX model"):
        OnnxClassifier(bad)
    cell = tmp_path / "cell.png"  # an image to classify, so the model is what fails
    Image.new("RGB", (48, 48), (200, 40, 40)).save(cell)
    assert main(["predict", str(bad), str(cell)]) == 2
    assert capsys.readouterr().err.startswith("error: cannot load ONNX model")
