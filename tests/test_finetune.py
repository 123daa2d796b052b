"""Fine-tuning from real ImageNet weights (../shared/weights): loading, the input normalisation
inside the network, BatchNorm re-estimation, and a short real fine-tune used end to end."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from hemacnn.cli import main
from hemacnn.config import OptimizerConfig, RecipeConfig
from hemacnn.data.images import preprocess_image
from hemacnn.errors import HemacnnError
from hemacnn.models import NormalizedNet, build_model, core_model
from hemacnn.models.batchnorm import (
    batchnorm_layers,
    has_folded_batchnorm,
    reestimate_batchnorm,
)
from hemacnn.models.zoo import load_pretrained, zero_head
from hemacnn.training.finetune import BatchNormReestimation
from hemacnn.training.recipe import make_optimizer, make_scheduler, param_groups

REPO = Path(__file__).resolve().parents[1]
TIMM_FILE = "mobilenet_v2_imagenet_timm.pth"
TV_FILE = "mobilenet_v2_imagenet_torchvision.pth"
HALF = {"input_mean": [0.5, 0.5, 0.5], "input_std": [0.5, 0.5, 0.5]}  # the files' [-1, 1] input
CLASSES = ("BLA", "LYT", "NGS")


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _cells(sample_root: Path, per_class: int, start: int, size: int,
           classes=CLASSES) -> torch.Tensor:
    files = [f for c in classes for f in sorted((sample_root / c).rglob("*.jpg"))
             [start:start + per_class]]
    images = np.stack([preprocess_image(f, size, "area") for f in files])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("name, file", [("timm/mobilenetv2_100", TIMM_FILE),
                                        ("mobilenet_v2", TV_FILE)])
def test_shared_files_load_strictly_into_their_architecture(shared_weights, name, file):
    model = build_model(name, 1000, 224)
    state = _state(shared_weights / file)
    model.load_state_dict(state, strict=True)  # the library's own check: raises on any gap
    report = load_pretrained(model, shared_weights / file)
    assert (report.loaded, report.kept_random, report.unused) == (len(state), 0, 0)
    assert report.shape_mismatch == ()
    assert has_folded_batchnorm(model)  # as the weights' README says: folded into the convs
    assert not has_folded_batchnorm(build_model(name, 1000, 224))  # a fresh model is not


def test_our_head_stays_random_and_is_reported(shared_weights):
    torch.manual_seed(0)
    model = build_model("timm/mobilenetv2_100", 3, 64, **HALF)
    head = core_model(model).classifier.weight.clone()
    report = load_pretrained(model, shared_weights / TIMM_FILE)
    assert report.shape_mismatch == ("classifier.weight", "classifier.bias")
    assert (report.kept_random, report.unused) == (2, 2)
    assert torch.equal(core_model(model).classifier.weight, head)
    assert torch.equal(core_model(model).conv_stem.weight,
                       _state(shared_weights / TIMM_FILE)["conv_stem.weight"])
    assert "shape differs (kept random): classifier.weight, classifier.bias" in report.summary()
    stem = core_model(model).conv_stem.weight.clone()
    assert zero_head(model) == 2  # model.head_init: zero
    assert not core_model(model).classifier.weight.any()
    assert not core_model(model).classifier.bias.any()
    assert torch.equal(core_model(model).conv_stem.weight, stem)


def test_a_file_that_matches_no_tensor_is_one_line_error(shared_weights, tmp_path, capsys):
    with pytest.raises(HemacnnError, match="no tensor matches mobilenet_v2 by name and shape"):
        load_pretrained(build_model("mobilenet_v2", 3, 64), shared_weights / TIMM_FILE)
    # Through the command line: one line, exit 2, no run folder left behind.
    root = tmp_path / "cells"
    rng = np.random.default_rng(0)
    for code in ("BLA", "LYT"):
        (root / code).mkdir(parents=True)
        for i in range(5):
            from PIL import Image

            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                root / code / f"{code}_{i}.jpg")
    run = tmp_path / "run"
    code = main(["train", str(REPO / "configs" / "finetune_mnv2.yaml"), f"data.root={root}",
                 "data.classes=[BLA,LYT]", "data.image_size=32", "model.name=mobilenet_v2",
                 f"model.weights={shared_weights / TIMM_FILE}", "--out", str(run),
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: model.weights") and "\n" not in err
    assert "'conv_stem.weight'" in err and "'features.0.0.weight'" in err
    assert not run.exists()


def test_normalisation_is_the_networks_first_layer():
    torch.manual_seed(0)
    plain = build_model("timm/mobilenetv2_100", 3, 64)
    normed = build_model("timm/mobilenetv2_100", 3, 64, **HALF)
    assert isinstance(normed, NormalizedNet) and not isinstance(plain, NormalizedNet)
    # No tensors of its own: the checkpoint holds the network's, the values are in the card.
    assert set(normed.state_dict()) == {f"net.{k}" for k in plain.state_dict()}
    normed.net.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(normed.eval()(x), plain.eval()((x - 0.5) / 0.5), atol=1e-5)
    rebuilt = build_model(**normed.hemacnn_arch)
    assert isinstance(rebuilt, NormalizedNet) and rebuilt.hemacnn_arch == normed.hemacnn_arch
    with pytest.raises(HemacnnError, match="go together"):
        build_model("timm/mobilenetv2_100", 3, 64, input_mean=[0.5] * 3)
    with pytest.raises(HemacnnError, match="one number per input channel"):
        build_model("timm/mobilenetv2_100", 3, 64, input_mean=[0.5], input_std=[0.5])


def test_bn_reestimation_keeps_the_eval_outputs_on_real_cells(shared_weights, sample_root):
    x = _cells(sample_root, 8, 0, 64, ("BLA", "LYT", "NGS", "EOS"))  # 32 real cells
    model = build_model("timm/mobilenetv2_100", 1000, 64, **HALF)  # all ImageNet, no new head
    load_pretrained(model, shared_weights / TIMM_FILE)
    with torch.no_grad():
        before = model.eval()(x)
        train_before = model.train()(x)  # batch statistics undo the folded scales
    for bn in batchnorm_layers(model):  # that forward moved the running statistics: put back
        bn.running_mean.zero_()
        bn.running_var.fill_(1 - bn.eps)
    model.train()
    est = reestimate_batchnorm(model, [x[:16], x[16:]], max_batches=2)
    assert model.training and all(bn.training for bn in batchnorm_layers(model))
    assert (est.layers, est.batches, est.images) == (52, 2, 32)
    assert not has_folded_batchnorm(model)
    with torch.no_grad():
        after = model.eval()(x)
        train_after = model.train()(x)
    scale = max(1.0, before.abs().max().item())
    assert (after - before).abs().max().item() <= 1e-4 * scale
    assert est.max_change <= 1e-4 * scale
    # The point of it: train mode now computes nearly the pretrained function (before, batch
    # statistics undid the folded scales and every cell got almost the same logits).
    # Measured: largest logit error 11.0 -> 1.25, ImageNet top-1 agreement 0/32 -> 28/32.
    assert (train_after - before).abs().max() < (train_before - before).abs().max() / 5
    assert (train_after.argmax(1) == before.argmax(1)).float().mean() >= 0.75
    assert (train_before.argmax(1) == before.argmax(1)).float().mean() <= 0.25


def test_reestimation_runs_only_at_the_start_and_only_when_folded(shared_weights):
    model = build_model("timm/mobilenetv2_100", 3, 32)
    load_pretrained(model, shared_weights / TIMM_FILE)
    module = SimpleNamespace(model=model)
    callback = BatchNormReestimation("auto", 2)
    callback.on_train_start(SimpleNamespace(global_step=5), module)  # a resumed run
    assert callback.result is None and has_folded_batchnorm(model)
    fresh = SimpleNamespace(model=build_model("timm/mobilenetv2_100", 3, 32))
    callback.on_train_start(SimpleNamespace(global_step=0), fresh)  # nothing folded: auto skips
    assert callback.result is None


def test_freeze_bn_keeps_batchnorm_in_eval_mode():
    from hemacnn.config import build_config
    from hemacnn.training.recipe import FreezeBatchNorm, recipe_callbacks
    from hemacnn.training.train import CellClassifier

    card = {"classes": list(CLASSES), "arch": {"name": "timm/mobilenetv2_100", "num_classes": 3,
                                               "input_size": 32, "options": dict(HALF)}}
    cfg = build_config({"optimizer": {"name": "adamw"}, "model": {"freeze_bn": True}})
    callbacks = recipe_callbacks(cfg)
    assert [type(c) for c in callbacks] == [FreezeBatchNorm]
    frozen = CellClassifier(card, cfg).train()
    callbacks[0].on_train_epoch_start(SimpleNamespace(current_epoch=0), frozen)
    bns = batchnorm_layers(frozen.model)
    assert bns and not any(bn.training for bn in bns)
    assert frozen.training and core_model(frozen.model).conv_stem.training
    assert not recipe_callbacks(build_config({}))
    assert all(bn.training for bn in batchnorm_layers(CellClassifier(card, {}).train().model))


def test_backbone_learning_rate_multiplier_with_onecycle():
    model = build_model("timm/mobilenetv2_100", 3, 32, **HALF)
    groups = param_groups(model, 1e-3, 0.1)
    head = {id(p) for p in core_model(model).classifier.parameters()}
    assert {id(p) for p in groups[0]["params"]} == head
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    opt = make_optimizer(groups, OptimizerConfig(name="adamw", lr=1e-3))
    sched = make_scheduler(opt, RecipeConfig(schedule="onecycle"), 100, 10)["scheduler"]
    peaks = [0.0, 0.0]
    for _ in range(100):
        peaks = [max(p, g["lr"]) for p, g in zip(peaks, opt.param_groups, strict=True)]
        opt.step()
        sched.step()
    assert peaks == pytest.approx([1e-3, 1e-4], rel=1e-3)
    assert param_groups(model, 1e-3, 1.0) is not groups  # 1.0: one group, as before
    assert not isinstance(param_groups(model, 1e-3, 1.0), list)


# --- a short real fine-tune, used end to end ---

@pytest.fixture(scope="module")
def tiny_cells(sample_root, tmp_path_factory) -> Path:
    """16 real cells per class of BLA, LYT, NGS (the first in file order)."""
    root = tmp_path_factory.mktemp("tiny")
    for code in CLASSES:
        (root / code).mkdir()
        for f in sorted((sample_root / code).rglob("*.jpg"))[:16]:
            shutil.copy(f, root / code / f.name)
    return root


@pytest.fixture(scope="module")
def finetuned(tiny_cells, shared_weights, tmp_path_factory) -> tuple[Path, str]:
    """configs/finetune_mnv2.yaml on the tiny real set at 64 px, 3 epochs: (run folder, its log)."""
    run = tmp_path_factory.mktemp("finetune") / "run"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("HEMACNN_CACHE", str(tmp_path_factory.getbasetemp() / "hemacnn-cache"))
        code = main(["train", str(REPO / "configs" / "finetune_mnv2.yaml"),
                     f"data.root={tiny_cells}", "data.classes=[BLA,LYT,NGS]",
                     "data.image_size=64", "data.batch_size=8", "trainer.max_epochs=3",
                     f"model.weights={shared_weights / TIMM_FILE}", "--out", str(run),
                     "--no-progress"])
    assert code == 0, out.getvalue()
    return run, out.getvalue()


def test_a_short_finetune_on_real_cells_lowers_the_loss(finetuned):
    run, log = finetuned
    assert "312 tensors loaded" in log and "classifier.weight, classifier.bias" in log
    assert "BatchNorm statistics re-estimated on" in log and "for 52 layers" in log
    change = float(re.search(r"eval-mode outputs changed by at most (\S+)", log).group(1))
    assert 0 < change < 1e-3  # measured on the last BatchNorm's output (the head is zero)
    with (run / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    # The zero head starts at ln 3 = 1.10 (timm's own init of a 3-class head: near 10).
    assert float(rows[0]["train_loss"]) < 1.5
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"]) - 0.05
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])


def test_config_and_card_carry_the_normalisation(finetuned, shared_weights):
    run, _ = finetuned
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["input_mean"] == [0.5] * 3 and cfg["model"]["input_std"] == [0.5] * 3
    card = json.loads((run / "model_card.json").read_text())
    ckpt_card = torch.load(run / "checkpoints" / "best.ckpt",
                           weights_only=True)["hyper_parameters"]["card"]
    for c in (card, ckpt_card):
        assert "normalize" not in c  # stored once, in the arch options that build the network
        assert c["arch"]["options"]["input_mean"] == [0.5] * 3
        assert c["arch"]["options"]["input_std"] == [0.5] * 3
        assert c["value_range"] == [0, 1]  # what the model takes; it normalises itself
        assert c["init_weights_report"]["loaded"] == 312
        assert c["init_weights_report"]["shape_mismatch"] == ["classifier.weight",
                                                               "classifier.bias"]


@pytest.mark.slow  # real weights on real cells through three routes: ~10 s
def test_checkpoint_onnx_and_serve_give_the_same_classes(finetuned, sample_root, tmp_path,
                                                         capsys):
    from fastapi.testclient import TestClient

    from hemacnn.inference.loading import load_checkpoint
    from hemacnn.serve.app import create_app

    run, _ = finetuned
    cells = [f for c in CLASSES for f in sorted((sample_root / c).rglob("*.jpg"))[40:44]]
    capsys.readouterr()
    assert main(["predict", str(run), *map(str, cells), "--json", "--precision", "fp32"]) == 0
    by_ckpt = json.loads(capsys.readouterr().out)
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "model.onnx"), *map(str, cells), "--json"]) == 0
    by_onnx = json.loads(capsys.readouterr().out)
    served = TestClient(create_app(run, precision="fp32")).post(
        "/api/predict", files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in cells])
    assert served.status_code == 200
    classes = [r["class"] for r in by_ckpt]
    assert classes == [r["class"] for r in by_onnx]
    assert classes == [r["class"] for r in served.json()["results"]]
    for a, b in zip(by_ckpt, by_onnx, strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)
    # explain explains the class predict gives (same model, normalisation and all).
    from hemacnn.inference.explain import explain_files

    line = explain_files(run, [cells[0]], out=tmp_path / "heat")[0]
    assert line.split()[1] == classes[0] and any((tmp_path / "heat").glob("*.png"))
    # The normalisation is really in there: the same weights fed [0, 1] pixels disagree.
    model, card = load_checkpoint(run, device="cpu", prepare=False)
    x = _cells(sample_root, 4, 40, int(card["input_size"]))
    with torch.no_grad():
        with_norm, without = model(x).softmax(1), core_model(model)(x).softmax(1)
    assert (with_norm - without).abs().max() > 0.05


def test_frozen_batchnorm_keeps_its_statistics_through_training(tiny_cells, shared_weights,
                                                                tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(REPO / "configs" / "finetune_mnv2.yaml"), f"data.root={tiny_cells}",
                 "data.classes=[BLA,LYT,NGS]", "data.image_size=32", "data.batch_size=8",
                 "trainer.max_epochs=1", "recipe.test_tta=false", "model.freeze_bn=true",
                 "optimizer.backbone_lr_mult=0.1",
                 f"model.weights={shared_weights / TIMM_FILE}", "--out", str(run),
                 "--no-progress"]) == 0
    assert "BatchNorm statistics re-estimated" not in capsys.readouterr().out  # auto: frozen
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    start = _state(shared_weights / TIMM_FILE)
    means = [k for k in start if k.endswith("running_mean")]
    assert len(means) == 52
    for k in means:  # trained in eval mode: the folded statistics, untouched
        assert torch.equal(state[f"model.net.{k}"], start[k])
        var = k.replace("running_mean", "running_var")
        assert torch.equal(state[f"model.net.{var}"], start[var])
    # ... while the weights did learn (at a tenth of the head's rate).
    assert not torch.equal(state["model.net.conv_stem.weight"], start["conv_stem.weight"])
