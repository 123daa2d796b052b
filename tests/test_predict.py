"""Prediction from a checkpoint alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from factories import RUN_SIZE, fake_labelled_run
from hemacnn.classes import class_name
from hemacnn.cli import main
from hemacnn.data.augment import dihedral
from hemacnn.errors import HemacnnError
from hemacnn.inference.loading import load_checkpoint, predict_arrays
from hemacnn.inference.predict import Status, classify_files, format_predictions

SIZE = RUN_SIZE


@pytest.fixture()
def synthetic_run(tmp_path: Path) -> Path:
    return fake_labelled_run(tmp_path, splits={"test": slice(None), "val": slice(6),
                                               "train": slice(None)})


def test_load_checkpoint_rebuilds_the_same_model(synthetic_run: Path):
    # prepare=False: the module exactly as trained (the default folds BatchNorm for speed)
    model, card = load_checkpoint(synthetic_run, prepare=False)
    assert card["classes"] == ["BLA", "LYT", "NGS"]
    assert not model.training
    ref = torch.load(synthetic_run / "checkpoints" / "best.ckpt", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v.cpu(), ref["state_dict"]["model." + k])
    # the .ckpt path works too, and eval mode makes prediction deterministic (noise off)
    model2, _ = load_checkpoint(synthetic_run / "checkpoints" / "best.ckpt")
    x = np.random.default_rng(1).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    p1 = predict_arrays(model, x, precision="fp32")
    p2 = predict_arrays(model2, x, precision="fp32")
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, rtol=1e-5)


def test_last_checkpoint_is_used_when_best_is_missing(synthetic_run: Path):
    ck = synthetic_run / "checkpoints"
    (ck / "best.ckpt").rename(ck / "last.ckpt")
    _, card = load_checkpoint(synthetic_run)
    assert card["input_size"] == SIZE


def test_tta_averages_the_eight_dihedral_transforms(synthetic_run: Path):
    model, _ = load_checkpoint(synthetic_run)
    x = np.random.default_rng(2).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    tta = predict_arrays(model, x, batch_size=2, tta=True, precision="fp32")
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expect = sum(torch.softmax(model(dihedral(t, k).contiguous()), 1) for k in range(8)) / 8
    np.testing.assert_allclose(tta, expect.numpy(), rtol=1e-4, atol=1e-6)
    # a transformed image has the same TTA prediction as the original
    rotated = np.ascontiguousarray(np.rot90(x, 1, axes=(1, 2)))
    np.testing.assert_allclose(predict_arrays(model, rotated, tta=True, precision="fp32"), tta,
                               atol=1e-5)
    assert not np.allclose(predict_arrays(model, x), tta)  # TTA actually changed something


def test_classify_files_reports_bad_files_without_crashing(synthetic_run: Path, tmp_path: Path):
    good = sorted((tmp_path / "data" / "BLA").glob("*.jpg"))[:2]
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    preds = classify_files(synthetic_run, [good[0], empty, good[1], text])
    assert [x.status for x in preds] == [Status.OK, Status.ERROR, Status.OK, Status.ERROR]
    rows = [x.row(["BLA", "LYT", "NGS"]) for x in preds]
    assert [r["status"].startswith("error: ") for r in rows] == [False, True, False, True]
    assert rows[1]["path"] == str(empty) and "empty.jpg" in rows[1]["status"]
    assert rows[1]["class"] == "" and rows[1]["probability"] is None
    p = rows[0]
    assert p["class"] in ("BLA", "LYT", "NGS") and p["name"] == class_name(p["class"])
    probs = {c: p[f"p_{c}"] for c in ("BLA", "LYT", "NGS")}
    assert p["probability"] == pytest.approx(max(probs.values()))
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    out = format_predictions(preds)
    assert "ERROR" in out and p["class"] in out


def test_predict_cli_json_and_errors(synthetic_run: Path, tmp_path: Path, capsys):
    img = sorted((tmp_path / "data" / "LYT").glob("*.jpg"))[0]
    assert main(["predict", str(synthetic_run), str(img), "--json", "--tta"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert preds[0]["path"] == str(img) and preds[0]["class"] in ("BLA", "LYT", "NGS")
    assert main(["predict", str(tmp_path / "nope.ckpt"), str(img)]) == 2
    assert "nope.ckpt not found" in capsys.readouterr().err
    bogus = tmp_path / "bogus.ckpt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(HemacnnError, match="not a hemacnn model"):
        load_checkpoint(bogus)
    with pytest.raises(HemacnnError, match="no checkpoints"):
        load_checkpoint(tmp_path)


def test_damaged_real_file_is_predicted_with_a_warning(synthetic_run: Path, corrupt_root: Path,
                                                      sample_root: Path):
    damaged = corrupt_root / "LYT_19975.jpg"
    clean = sorted((sample_root / "LYT").rglob("*.jpg"))[0]
    rows = [p.row(["BLA", "LYT", "NGS"]) for p in classify_files(synthetic_run, [damaged, clean])]
    assert rows[0]["status"].startswith("suspicious: ") and rows[0]["class"]
    assert rows[0]["warning"] == "pixels"
    assert rows[1]["status"] == "ok" and rows[1]["warning"] == ""
    assert "WARNING  pixels: " in format_predictions(classify_files(synthetic_run, [damaged]))
