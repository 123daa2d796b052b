"""What a one-image ``hemacnn predict`` imports: its start-up is mostly imports, so the budget
is guarded by name (no timings here; the seconds are in benchmarks/bench_predict.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Modules a prediction with one of the project's own architectures never needs. Each cost
# hundreds of milliseconds to seconds of start-up when it crept in (torchvision pulls in
# torch._dynamo; timm pulls in torchvision).
HEAVY = ("lightning", "pytorch_lightning", "torchmetrics", "matplotlib", "sklearn", "scipy",
         "torchvision", "torch._dynamo", "timm", "optuna", "pandas", "onnx", "onnxruntime",
         "pydantic", "rich", "pytorch_grad_cam", "hemacnn.train", "hemacnn.evaluate",
         "hemacnn.plots")


def _imported_by(args: list[str]) -> list[str]:
    code = ("import sys; from hemacnn.cli import main; code = main(sys.argv[1:]); "
            f"heavy = {HEAVY!r}; "
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

    from hemacnn.loading import _build_loaded
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

    from hemacnn import loading

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
