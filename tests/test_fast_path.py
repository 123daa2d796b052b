"""The fastest correct path per precision (issue 33): a parity-checked ONNX export runs fp32
(in evaluate, predict, serve and the end-of-training test), an export that disagrees with fp32
torch is refused, training exports the run itself when that is cheap, and a failed export never
fails a training. The speeds are in benchmarks/bench_predict.py, never asserted here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from factories import trainer_config
from hemacnn.cli import main
from hemacnn.errors import HemacnnError
from hemacnn.inference.classifier import load_classifier, numerics
from hemacnn.inference.export import check_parity, export_model
from hemacnn.inference.loading import load_checkpoint
from hemacnn.inference.onnxmodel import PARITY_ATOL, OnnxClassifier, fresh_export
from hemacnn.training.train import EXPORT_COST_S, export_after_training, train


@pytest.fixture(scope="module")
def exported_training(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained with ``trainer.export=always``."""
    base = tmp_path_factory.mktemp("fast_path")
    return train(trainer_config(base, synthetic_root, export="always"), out=base / "run",
                 progress=False)


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("export"))
    return dest


def test_training_exports_and_tests_through_the_export(exported_training: Path, tmp_path: Path):
    run = exported_training
    onnx_card = json.loads((run / "export" / "model_card.json").read_text())
    assert onnx_card["onnx"]["parity"]["max_abs_prob_diff"] <= PARITY_ATOL
    assert fresh_export(run) == run / "export" / "model.onnx"
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["inference"]["backend"] == "onnxruntime" and test["inference"]["precision"] == (
        "fp32")
    # the export's card got the figures its checkpoint's test measured (after the export)
    run_card = json.loads((run / "model_card.json").read_text())
    assert onnx_card["metrics"] == run_card["metrics"]
    assert OnnxClassifier(run / "export" / "model.onnx").card["metrics"] == run_card["metrics"]
    # the same figures as the checkpoint through torch (a copy without the export)
    plain = _copy(run, tmp_path / "plain")
    assert main(["evaluate", str(plain), "--out", str(tmp_path / "torch")]) == 0
    by_torch = json.loads((tmp_path / "torch" / "evaluation_test.json").read_text())
    assert by_torch["inference"]["backend"] == "torch"
    assert by_torch["confusion_matrix"] == test["confusion_matrix"]
    np.testing.assert_allclose(np.load(run / "predictions_test.npz")["probs"],
                               np.load(tmp_path / "torch" / "predictions_test.npz")["probs"],
                               atol=PARITY_ATOL)


def test_evaluate_records_its_path_and_speed(exported_training: Path, tmp_path: Path, capsys):
    assert main(["evaluate", str(exported_training), "--out", str(tmp_path)]) == 0
    assert "network: " in capsys.readouterr().out
    result = json.loads((tmp_path / "evaluation_test.json").read_text())
    assert result["inference"]["backend"] == "onnxruntime"
    assert result["throughput"]["images"] == result["n"]
    assert result["throughput"]["images_per_s"] > 0
    # bf16 needs the checkpoint: ONNX Runtime has no bf16 path on x86, torch runs it
    assert main(["evaluate", str(exported_training), "--out", str(tmp_path),
                 "--precision", "bf16"]) == 0
    bf16 = json.loads((tmp_path / "evaluation_test_bf16.json").read_text())
    assert bf16["inference"]["backend"] == "torch" and bf16["inference"]["precision"] == "bf16"


def test_an_export_that_disagrees_with_torch_is_refused(exported_training: Path,
                                                        tmp_path: Path):
    model, card = load_checkpoint(exported_training, device="cpu", prepare=False)
    size = card["input_size"]
    good = exported_training / "export" / "model.onnx"
    assert check_parity(good, model, 3, size)["max_abs_prob_diff"] <= PARITY_ATOL
    proto = onnx.load(str(good))  # the same graph with one weight tensor changed
    first = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    changed = numpy_helper.to_array(first) * 1.5
    first.CopyFrom(numpy_helper.from_array(changed.astype(np.float32), first.name))
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    with pytest.raises(HemacnnError, match="differ from torch's .* not exported"):
        check_parity(tmp_path / "bad.onnx", model, 3, size)
    # an export whose card records no passed check does not stand in for the checkpoint
    run = shutil.copytree(exported_training, tmp_path / "run")
    card_file = run / "export" / "model_card.json"
    entry = json.loads(card_file.read_text())
    entry["onnx"]["parity"]["max_abs_prob_diff"] = 0.5
    card_file.write_text(json.dumps(entry))
    assert fresh_export(run) is None
    assert numerics(load_classifier(run)).backend == "torch"
    del entry["onnx"]["parity"]  # an export made before the check
    card_file.write_text(json.dumps(entry))
    assert fresh_export(run) is None


def test_auto_exports_only_a_training_long_enough(tiny_run: Path, tmp_path: Path, capsys):
    run = _copy(tiny_run, tmp_path / "run")
    assert not export_after_training(run, "auto", 9 * EXPORT_COST_S)
    assert not export_after_training(run, "never", 1e6)
    assert not (run / "export").exists() and capsys.readouterr().out == ""
    assert export_after_training(run, "auto", 10 * EXPORT_COST_S)
    assert fresh_export(run) is not None
    line = capsys.readouterr().out
    assert line.startswith(f"exported {run / 'export' / 'model.onnx'} in ") and "% of the " in line


def test_a_failed_export_never_fails_the_training(tiny_run: Path, tmp_path: Path, capsys):
    run = _copy(tiny_run, tmp_path / "run")
    (run / "export").write_text("a file where the export folder goes")
    assert not export_after_training(run, "always", 1000.0)
    out = capsys.readouterr().out
    assert out.startswith("export skipped: ") and out.count("\n") == 1
    assert "predicts through its checkpoint" in out
    assert numerics(load_classifier(run)).backend == "torch"  # and the run still predicts


def test_export_checks_parity_before_writing(tiny_run: Path, tmp_path: Path):
    written = export_model(tiny_run, tmp_path / "out")
    card = json.loads(written["card"].read_text())
    assert card["onnx"]["parity"]["images"] >= 1
    model, _ = load_checkpoint(tiny_run, device="cpu", prepare=False)
    x = torch.rand(3, 3, 48, 48)
    with torch.no_grad():
        ref = torch.softmax(model(x), dim=1).numpy()
    got = OnnxClassifier(written["onnx"]).batch_probs([x])
    np.testing.assert_allclose(got, ref, atol=PARITY_ATOL)
