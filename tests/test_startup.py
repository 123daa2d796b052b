"""What a one-image ``hemacnn predict`` imports: its start-up is mostly imports, so the budget
is guarded by name (no timings here; the seconds are in benchmarks/bench_predict.py)."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Modules a prediction with one of the project's own architectures never needs. Each cost
# hundreds of milliseconds to seconds of start-up when it crept in (torchvision pulls in
# torch._dynamo; timm pulls in torchvision).
HEAVY = ("lightning", "pytorch_lightning", "torchmetrics", "matplotlib", "sklearn", "scipy",
         "torchvision", "torch._dynamo", "timm", "optuna", "pandas", "onnx", "onnxruntime",
         "pydantic", "rich", "pytorch_grad_cam",
         "hemacnn.training.train", "hemacnn.evaluation.evaluate",
         "hemacnn.evaluation.plots")


def _imported_by(args: list[str], heavy: tuple[str, ...] = HEAVY) -> list[str]:
    code = ("import sys; from hemacnn.cli import main; code = main(sys.argv[1:]); "
            f"heavy = {heavy!r}; "
            "print('LOADED=' + ','.join(m for m in heavy if m in sys.modules)); "
            "sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("LOADED="))
    return [m for m in line[len("LOADED="):].split(",") if m]


def test_predict_one_image_imports_nothing_heavy(trained_run: Path, matek_images: Path,
                                                 tmp_path: Path) -> None:
    image = next((matek_images / "LYT").rglob("*.jpg"))
    out = tmp_path / "one.csv"
    assert _imported_by(["predict", str(trained_run), str(image), "--out", str(out)]) == []
    assert out.read_text().count("\n") == 2  # header + the one cell: it did predict


@pytest.fixture
def exported_run(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the trained run with its default ONNX export (the shared run stays as it is)."""
    from hemacnn.cli import main

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("export"))
    assert main(["export", str(run)]) == 0
    return run


def _probabilities(csv_path: Path) -> list[float]:
    row = next(csv.DictReader(csv_path.open()))
    return [float(v) for k, v in row.items() if k.startswith("p_")]


def test_a_run_with_a_fresh_export_predicts_without_torch(exported_run: Path, trained_run: Path,
                                                          matek_images: Path,
                                                          tmp_path: Path) -> None:
    image = next((matek_images / "NGS").rglob("*.jpg"))
    before, after = tmp_path / "before.csv", tmp_path / "after.csv"
    assert _imported_by(["predict", str(trained_run), str(image), "--out", str(before)],
                        ("torch",)) == ["torch"]  # no export: the checkpoint, through torch
    assert _imported_by(["predict", str(exported_run), str(image), "--out", str(after)],
                        ("torch", *HEAVY)) == ["onnxruntime"]
    assert before.read_text().splitlines()[0] == after.read_text().splitlines()[0]
    np.testing.assert_allclose(_probabilities(after), _probabilities(before), atol=1e-4)
    assert (next(csv.DictReader(after.open()))["class"]
            == next(csv.DictReader(before.open()))["class"])


def test_a_stale_export_is_not_used(exported_run: Path, tmp_path: Path) -> None:
    from hemacnn.inference.classifier import load_classifier
    from hemacnn.inference.onnxmodel import OnnxClassifier, fresh_export
    from hemacnn.rundir import find_checkpoint

    ckpt = find_checkpoint(exported_run)
    assert fresh_export(exported_run) == exported_run / "export" / "model.onnx"
    clf = load_classifier(exported_run)
    assert isinstance(clf, OnnxClassifier) and clf.source == str(ckpt)  # serve shows the run's
    assert fresh_export(exported_run / "export" / "model.onnx") is None  # a file, not a run
    assert not isinstance(load_classifier(exported_run, precision="bf16"), OnnxClassifier)
    ckpt.write_bytes(ckpt.read_bytes()[:-100])  # cut short: its weights cannot be read
    assert fresh_export(exported_run) is None  # (other weights: the test below)


def test_an_export_stays_fresh_while_its_checkpoint_holds_the_same_weights(
        exported_run: Path, monkeypatch) -> None:
    import torch

    from hemacnn.inference import checkpoint
    from hemacnn.inference.onnxmodel import fresh_export
    from hemacnn.rundir import find_checkpoint

    onnx, ckpt = exported_run / "export" / "model.onnx", find_checkpoint(exported_run)
    with monkeypatch.context() as m:  # the file is untouched: one stat, nothing read or hashed
        m.setattr(checkpoint, "weights_sha256", lambda path: pytest.fail("hashed " + str(path)))
        assert fresh_export(exported_run) == onnx
    state = checkpoint.read_checkpoint(ckpt)
    state.pop("optimizer_states")  # saved again without its optimizer: the same network
    torch.save(state, ckpt)
    assert fresh_export(exported_run) == onnx
    weights = state["state_dict"]
    prefix = (checkpoint.EMA_PREFIX if any(k.startswith(checkpoint.EMA_PREFIX) for k in weights)
              else checkpoint.MODEL_PREFIX)
    name = next(k for k, v in weights.items() if k.startswith(prefix) and v.is_floating_point())
    weights[name] = weights[name] + 1e-3  # one layer trained further: another network
    torch.save(state, ckpt)
    assert fresh_export(exported_run) is None


def test_a_damaged_export_falls_back_to_the_checkpoint(exported_run: Path) -> None:
    from hemacnn.inference.classifier import load_classifier
    from hemacnn.inference.loading import TorchClassifier
    from hemacnn.inference.onnxmodel import fresh_export

    onnx = fresh_export(exported_run)
    onnx.write_bytes(onnx.read_bytes()[:1000])  # truncated: the card beside it still matches
    assert isinstance(load_classifier(exported_run), TorchClassifier)


def test_help_imports_no_torch() -> None:
    code = ("import sys\nfrom hemacnn.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint('TORCH=' + str('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert "TORCH=False" in out.stdout


@pytest.mark.parametrize("name", ["mv3", "vgg16"])
def test_loaded_weights_skip_random_init(name: str, tmp_path: Path) -> None:
    """The model rebuilt from a checkpoint holds exactly the saved weights, none left on the
    meta device it was built on."""
    import torch

    from hemacnn.inference.loading import _build_loaded
    from hemacnn.models import build_model

    torch.manual_seed(0)
    model = build_model(name, 3, 48, width=0.125)
    arch = model.hemacnn_arch
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = _build_loaded(arch, saved)
    assert not any(t.is_meta for t in (*loaded.parameters(), *loaded.buffers()))
    assert loaded.state_dict().keys() == saved.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())


def test_non_persistent_state_falls_back_to_a_normal_build(monkeypatch) -> None:
    import torch
    from torch import nn

    from hemacnn.inference import loading

    class WithScratch(nn.Module):  # a buffer the weights do not carry
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.register_buffer("scale", torch.full((2,), 3.0), persistent=False)

    monkeypatch.setattr(loading, "build_model", lambda *a, **k: WithScratch())
    weights = WithScratch().state_dict()
    model = loading._build_loaded({"name": "x", "num_classes": 2, "input_size": 8}, weights)
    assert not model.scale.is_meta and torch.equal(model.scale, torch.full((2,), 3.0))
    assert torch.equal(model.fc.weight, weights["fc.weight"])


def test_evaluate_through_a_fresh_export_scores_as_the_checkpoint(exported_run: Path,
                                                                   trained_run: Path,
                                                                   tmp_path: Path) -> None:
    from hemacnn.cli import main

    assert main(["evaluate", str(trained_run), "--out", str(tmp_path / "torch")]) == 0
    assert main(["evaluate", str(exported_run), "--out", str(tmp_path / "onnx")]) == 0
    torch_run, onnx_run = (json.loads((tmp_path / d / "evaluation_test.json").read_text())
                           for d in ("torch", "onnx"))
    assert onnx_run["checkpoint"].startswith(str(exported_run))  # the checkpoint is named
    assert onnx_run["confusion_matrix"] == torch_run["confusion_matrix"]
    p_torch, p_onnx = (np.load(tmp_path / d / "predictions_test.npz")["probs"]
                       for d in ("torch", "onnx"))
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4)


def test_the_command_puts_large_cpu_tensors_on_huge_pages(monkeypatch, capsys):
    """`hemacnn` turns on PyTorch's huge-page CPU allocation unless the user chose; env.json says
    which was in force (the speed is in benchmarks/bench_alloc.py)."""
    import os

    from hemacnn.cli import THP_ENV, main
    from hemacnn.runinfo import environment_info

    monkeypatch.setenv(THP_ENV, "unset below")  # so that monkeypatch restores the original
    monkeypatch.delenv(THP_ENV)
    assert main([]) == 2  # no command: the help, and nothing else
    assert os.environ[THP_ENV] == "1"
    assert environment_info(0)["thp_mem_alloc"] == "1"
    monkeypatch.setenv(THP_ENV, "0")
    main([])
    assert os.environ[THP_ENV] == "0"
    assert environment_info(0)["thp_mem_alloc"] == "0"
