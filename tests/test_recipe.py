"""Training-recipe options (issue 8): each switch does what it says, on tiny tensors or runs.

Unit checks on the pieces (optimizers, schedules, losses, mixing, EMA, augmentation), then
short real Lightning runs on synthetic images for the switches that live in the trainer.
The paper configs must keep the paper's recipe: that is checked first.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from factories import cell_folder, read_metrics, tiny_config
from hemacnn.config import Config, OptimizerConfig, RecipeConfig, load_config
from hemacnn.data.augment import stain_transform
from hemacnn.errors import HemacnnError
from hemacnn.training.recipe import (
    batch_mixer,
    classification_loss,
    make_ema,
    make_optimizer,
    make_scheduler,
    progressive_resize,
    recipe_callbacks,
    train_size,
    warmup_cosine,
)
from hemacnn.training.train import CellClassifier, train

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("BLA", "LYT", "NGS")


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "paper").glob("*.yaml"))
                         + [REPO / "configs" / "quick.yaml"])
def test_paper_and_quick_configs_keep_the_paper_recipe(path: Path) -> None:
    cfg = load_config(path)
    card = {"classes": list(cfg.data.classes),
            "arch": {"name": cfg.model.name, "num_classes": len(cfg.data.classes),
                     "input_size": 48 if cfg.model.name == "mv3" else 134,
                     "options": {"width": 0.05, "noise_std": cfg.model.noise_std}}}
    module = CellClassifier(card, cfg)
    assert module.ema is None and module.mixer is None and module.class_weight is None
    assert [type(c) for c in recipe_callbacks(cfg)] == []  # no EMA, freezing or rate log
    assert cfg.imbalance.sampler == "shuffle" and cfg.imbalance.other is False
    assert cfg.recipe.crop_scale is None and cfg.recipe.stain_jitter == 0
    assert cfg.model.weights is None and cfg.recipe.grad_clip is None

    class _Trainer:  # configure_optimizers asks the trainer for the run's length only
        estimated_stepping_batches = 100
        max_epochs = 10

    module.trainer = _Trainer()  # type: ignore[assignment]
    opt = module.configure_optimizers()
    assert type(opt) is (torch.optim.Adam if cfg.optimizer.name == "adam"
                         else torch.optim.Adadelta)  # no scheduler: a constant rate
    assert opt.param_groups[0]["weight_decay"] == 0
    logits, y = torch.randn(5, len(cfg.data.classes)), torch.tensor([0, 1, 0, 1, 1])
    assert torch.equal(module._loss(logits, y, train=True)[1], F.cross_entropy(logits, y))


def _one_param(value: float = 1.0) -> nn.Parameter:
    return nn.Parameter(torch.tensor([value]))


def _opt(name: str, **kw) -> OptimizerConfig:
    return OptimizerConfig(name=name, lr=0.1, **kw)


def test_adamw_decay_is_decoupled_from_the_gradient() -> None:
    # With a zero gradient, AdamW shrinks the weight by lr * wd exactly; Adam's (coupled)
    # decay goes through the adaptive step instead and moves it by about lr.
    p = _one_param()
    opt = make_optimizer([p], _opt("adamw", weight_decay=0.5))
    p.grad = torch.zeros(1)
    opt.step()
    assert p.item() == pytest.approx(1.0 - 0.1 * 0.5)
    q = _one_param()
    opt = make_optimizer([q], _opt("adam", weight_decay=0.5))
    q.grad = torch.zeros(1)
    opt.step()
    assert q.item() == pytest.approx(0.9, abs=1e-3)


def test_sgd_momentum_and_nesterov() -> None:
    def two_steps(nesterov: bool) -> float:
        p = _one_param(0.0)
        opt = make_optimizer([p], _opt("sgd", nesterov=nesterov))
        for _ in range(2):
            p.grad = torch.ones(1)
            opt.step()
        return p.item()

    assert two_steps(False) == pytest.approx(-0.1 - 0.19)  # buffers 1, 1.9
    assert two_steps(True) == pytest.approx(-0.19 - 0.271)  # g + m * buf


def _lrs(r: dict, steps: int = 100, epochs: int = 10, lr: float = 1.0) -> list[float]:
    p = _one_param()
    opt = torch.optim.SGD([p], lr=lr)
    sched = make_scheduler(opt, RecipeConfig(**r), steps, epochs)["scheduler"]
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_onecycle_rises_to_the_configured_rate_then_anneals() -> None:
    lrs = _lrs({"schedule": "onecycle", "warmup_epochs": 2})
    peak = int(np.argmax(lrs))
    assert peak in (19, 20) and lrs[peak] == pytest.approx(1.0, rel=1e-3)
    assert lrs[0] < 0.1 and lrs[-1] < 1e-3


def test_cosine_with_warmup() -> None:
    lrs = _lrs({"schedule": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.1})
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # no rise after
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)
    assert warmup_cosine(0, 10, 0.0)(5) == pytest.approx(0.5)


def test_reduce_on_plateau_halves_after_patience() -> None:
    p = _one_param()
    opt = torch.optim.SGD([p], lr=1.0)
    entry = make_scheduler(opt, RecipeConfig(schedule="plateau", plateau_factor=0.5,
                                             plateau_patience=1), 10, 10)
    assert entry["monitor"] == "val_loss" and entry["interval"] == "epoch"
    for loss in (1.0, 1.0, 1.0):
        entry["scheduler"].step(loss)
    assert opt.param_groups[0]["lr"] == 0.5


def test_label_smoothing_and_class_weights_change_the_loss() -> None:
    logits = torch.tensor([[10.0, -10.0, -10.0]])
    y = torch.tensor([0])
    assert classification_loss(logits, y) < 1e-6  # confident and right: no loss
    assert classification_loss(logits, y, label_smoothing=0.3) > 1.0  # smoothing penalises it
    wrong = torch.tensor([[0.0, 2.0, 0.0]])
    w = torch.tensor([3.0, 1.0, 1.0])
    # Hard labels: a weighted mean, so one sample's loss is unchanged by its weight...
    assert classification_loss(wrong, y, weight=w) == pytest.approx(
        classification_loss(wrong, y).item())
    # ...but across classes the weighted class dominates.
    two, yy = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]), torch.tensor([0, 2])
    hard, easy = F.cross_entropy(two, yy, reduction="none").tolist()
    weighted = classification_loss(two, yy, weight=w).item()
    assert weighted == pytest.approx((3 * hard + easy) / 4)


def test_focal_loss_matches_its_formula() -> None:
    logits = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3]]))
    y = torch.tensor([0, 0])
    expected = -(0.1 ** 2 * math.log(0.9) + 0.8 ** 2 * math.log(0.2)) / 2
    assert classification_loss(logits, y, focal_gamma=2.0).item() == pytest.approx(expected,
                                                                                   rel=1e-5)
    assert classification_loss(logits, y, focal_gamma=0.0).item() == pytest.approx(
        F.cross_entropy(logits, y).item())


def test_mixup_and_cutmix_give_soft_targets() -> None:
    torch.manual_seed(0)
    x = torch.stack([torch.zeros(3, 8, 8), torch.ones(3, 8, 8)])
    y = torch.tensor([0, 2])
    for mixer in (batch_mixer(0.4, 0.0, 3), batch_mixer(0.0, 1.0, 3), batch_mixer(0.4, 1.0, 3)):
        xm, t = mixer(x, y)
        assert t.shape == (2, 3) and torch.allclose(t.sum(1), torch.ones(2))
        assert t[:, 1].abs().max() == 0  # only the two classes present are mixed
        # Image 1 is all ones (class 2), image 0 all zeros (class 0): each mixed image's mean
        # is the share of class 2 in its pixels, which its soft target must state.
        assert torch.allclose(xm.mean(dim=(1, 2, 3)), t[:, 2], atol=1e-6)
        assert ((t > 0) & (t < 1)).any()  # something was mixed
        assert classification_loss(torch.randn(2, 3), t, focal_gamma=2.0).isfinite()
    assert batch_mixer(0.0, 0.0, 3) is None


def test_ema_is_torchs_exponential_average() -> None:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = make_ema(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update_parameters(model)  # the first update copies
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update_parameters(model)
    d = 2 / 11  # warm-up: min(0.9, (1 + n) / (10 + n)) after n = 1 average
    assert ema.module.weight.item() == pytest.approx(d * 2.0 + (1 - d) * 3.0)
    assert not any(p.requires_grad for p in ema.parameters())
    from hemacnn.training.recipe import ema_decay_at

    assert ema_decay_at(0.9, 0) == pytest.approx(0.1) and ema_decay_at(0.9, 1000) == 0.9
    # Long after the warm-up the update is torch's plain EMA at the configured decay.
    for _ in range(200):
        ema.update_parameters(model)
    with torch.no_grad():
        model.weight.fill_(4.0)
    before = ema.module.weight.item()
    ema.update_parameters(model)
    assert ema.module.weight.item() == pytest.approx(0.9 * before + 0.1 * 4.0)


def test_stain_transform_jitters_colour_and_crops_at_full_size() -> None:
    assert stain_transform(32) is None
    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    jitter = stain_transform(32, stain_jitter=0.2)
    out = jitter(img)
    assert out.dtype == torch.uint8 and out.shape == img.shape and not torch.equal(out, img)
    crop = stain_transform(32, crop_scale=0.5)
    outs = [crop(img) for _ in range(5)]
    assert all(o.shape == img.shape for o in outs)
    assert any(not torch.equal(o, img) for o in outs)


# --- real Lightning runs on synthetic images (mechanics only) ---------------------------------

@pytest.fixture(scope="module")
def colour_root(tmp_path_factory) -> Path:
    """Three classes of 32 px JPEGs told apart by colour."""
    return cell_folder(tmp_path_factory.mktemp("colours"), 20, size=32, digits=3)


def tiny(tmp_path: Path, root: Path, **sections) -> Path:
    """An eighth-width MV2 at 46 px: seconds per run."""
    base = {"data": {"classes": list(CLASSES), "image_size": 46, "batch_size": 8},
            "model": {"name": "mv2"}, "optimizer": {"name": "adamw", "lr": 0.01},
            "trainer": {"max_epochs": 3}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return tiny_config(tmp_path / "tiny.yaml", root, **base)


def test_schedule_is_logged_per_epoch(tmp_path, colour_root) -> None:
    cfg = tiny(tmp_path, colour_root, recipe={"schedule": "cosine", "warmup_epochs": 1})
    run = train(cfg, out=tmp_path / "run", progress=False)
    lrs = [float(r["lr"]) for r in read_metrics(run)]
    assert len(lrs) == 3 and lrs[0] > lrs[1] > lrs[2]  # cosine after one warm-up epoch
    with (run / "logs" / "csv" / "metrics.csv").open(newline="") as fh:
        logged = [r for r in csv.DictReader(fh) if r.get("lr-AdamW")]
    assert len(logged) == 3  # Lightning's LearningRateMonitor, once per epoch
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # plain types only
    hp = ckpt["hyper_parameters"]
    assert ckpt["lr_schedulers"] and hp["config"]["recipe"]["schedule"] == "cosine"


def _init_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A saved state dict of the tiny model: a known starting point via model.weights."""
    from hemacnn.models import build_model

    torch.manual_seed(123)
    model = build_model("mv2", 3, 46, width=0.125)
    path = tmp_path / "init.pt"
    torch.save(model.state_dict(), path)
    return path, {n: p.detach().clone() for n, p in model.named_parameters()}


def _moved(ckpt: dict, init: dict[str, torch.Tensor], prefix: str = "model.") -> float:
    return math.sqrt(sum(((ckpt["state_dict"][prefix + n] - v) ** 2).sum().item()
                         for n, v in init.items()))


def test_gradient_clipping_bounds_each_step(tmp_path, colour_root) -> None:
    # Plain SGD with lr 1: a step moves the weights by lr * |grad| <= clip, in norm.
    path, init = _init_file(tmp_path)
    moved = {}
    for clip in (1e-3, None):
        cfg = tiny(tmp_path, colour_root, optimizer={"name": "sgd", "lr": 1.0, "momentum": 0},
                   model={"weights": str(path)}, recipe={"grad_clip": clip},
                   trainer={"max_epochs": 1})
        run = train(cfg, out=tmp_path / f"run-{clip}", progress=False)
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        moved[clip] = (_moved(ckpt, init), ckpt["global_step"])
    distance, steps = moved[1e-3]
    assert 0 < distance <= steps * 1e-3 * 1.001
    assert moved[None][0] > steps * 1e-3 * 10  # without clipping the steps are far larger


def test_ema_weights_are_validated_saved_and_predict(tmp_path, colour_root) -> None:
    from hemacnn.inference.loading import load_checkpoint

    cfg = tiny(tmp_path, colour_root, recipe={"ema_decay": 0.5}, trainer={"max_epochs": 2})
    run = train(cfg, out=tmp_path / "run", progress=False)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    sd = ckpt["state_dict"]
    assert int(sd["ema.n_averaged"]) == ckpt["global_step"]  # one update per step
    raw, avg = sd["model.L0_conv.weight"], sd["ema.module.L0_conv.weight"]
    assert not torch.equal(raw, avg)
    model, _ = load_checkpoint(run / "checkpoints" / "last.ckpt", device="cpu", prepare=False)
    assert torch.equal(model.L0_conv.weight, avg)  # prediction uses the averaged weights


def test_mixup_stain_and_balanced_options_train(tmp_path, colour_root) -> None:
    cfg = tiny(tmp_path, colour_root,
               data={"augment": True},
               recipe={"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "stain_jitter": 0.1,
                       "crop_scale": 0.7, "label_smoothing": 0.1, "schedule": "onecycle"},
               imbalance={"sampler": "balanced", "per_class": 5, "focal_gamma": 2.0,
                          "class_weights": True},
               trainer={"max_epochs": 1})
    run = train(cfg, out=tmp_path / "run", progress=False)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2  # 3 classes x 5 draws = 15 samples = 2 batches of 8
    assert ckpt["lr_schedulers"][0]["total_steps"] == 2  # the one-cycle spans the run exactly
    hp = ckpt["hyper_parameters"]
    assert hp["config"]["imbalance"]["focal_gamma"] == 2.0 and len(hp["class_weights"]) == 3
    assert Config.model_validate(hp["config"]).recipe.mixup_alpha == 0.2  # the config, typed
    assert math.isfinite(float(read_metrics(run)[0]["train_loss"]))


@pytest.mark.parametrize(("limit", "per_epoch"), [(3, 3), (0.34, 2)])
def test_onecycle_spans_exactly_the_steps_trained(tmp_path, colour_root, limit, per_epoch
                                                  ) -> None:
    # 20 images a class: test 2, validation 4, training 14 -> 42 images, 6 batches of 8; limited
    # to 3 batches, or to int(6 x 0.34) = 2 as Lightning counts a fraction.
    cfg = tiny(tmp_path, colour_root, recipe={"schedule": "onecycle"},
               trainer={"max_epochs": 2, "limit_train_batches": limit})
    run = train(cfg, out=tmp_path / "run", progress=False)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * per_epoch
    assert ckpt["lr_schedulers"][0]["total_steps"] == 2 * per_epoch
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 2 * per_epoch


def test_test_tta_averages_the_end_of_training_test(tmp_path, colour_root) -> None:
    from hemacnn.evaluation.evaluate import evaluate_run

    cfg = tiny(tmp_path, colour_root, recipe={"test_tta": True}, trainer={"max_epochs": 1})
    run = train(cfg, out=tmp_path / "run", progress=False)
    end_metrics = json.loads((run / "test_metrics.json").read_text())
    assert end_metrics["tta"] is True
    # Saved under the name `evaluate --tta` uses: evaluation_test.json means single views.
    assert not (run / "evaluation_test.json").exists()
    saved = json.loads((run / "evaluation_test_tta.json").read_text())
    assert saved["macro_f1"] == end_metrics["macro_f1"]
    end = np.load(run / "predictions_test_tta.npz")["probs"]
    plain = evaluate_run(run, out=tmp_path / "plain")
    with_tta = evaluate_run(run, tta=True, out=tmp_path / "tta")
    plain_p = np.load(plain["outputs"]["predictions"])["probs"]
    tta_p = np.load(with_tta["outputs"]["predictions"])["probs"]
    assert np.allclose(end, tta_p, atol=2e-3)  # what `evaluate --tta` gives
    assert not np.allclose(end, plain_p, atol=2e-3)


def test_progressive_sizes_ramp_linearly_to_full_size() -> None:
    from hemacnn.training.recipe import progressive_size

    sizes = [progressive_size(64, 128, e / 4) for e in range(5)]
    assert sizes == [64, 80, 96, 112, 128]
    card = {"classes": list(CLASSES),
            "arch": {"name": "timm/resnet18", "num_classes": 3, "input_size": 64,
                     "options": {}}}
    r = RecipeConfig(progressive=(32, 2))
    CellClassifier(card, {"optimizer": _opt("adamw"), "recipe": r})  # resnet18 takes 32 px
    assert [train_size(r, e, 64) for e in range(4)] == [32, 48, 64, 64]
    x = torch.rand(2, 3, 64, 64)
    assert progressive_resize(r, x, 0).shape[-1] == 32
    assert progressive_resize(RecipeConfig(), x, 0) is x


def test_progressive_trains_a_zoo_model_and_refuses_a_fixed_head(tmp_path, colour_root) -> None:
    seen: list[int] = []
    cfg = tiny(tmp_path, colour_root, model={"name": "timm/resnet18", "width": 1.0},
               data={"image_size": 48}, recipe={"progressive": [24, 2]},
               trainer={"max_epochs": 3})
    import hemacnn.training.train as train_module

    original = train_module.CellClassifier.forward

    def spy(self, x):
        if self.training:
            seen.append(x.shape[-1])
        return original(self, x)

    train_module.CellClassifier.forward = spy
    try:
        run = train(cfg, out=tmp_path / "run", progress=False)
    finally:
        train_module.CellClassifier.forward = original
    per_epoch = len(seen) // 3
    assert seen[:per_epoch] == [24] * per_epoch and seen[-per_epoch:] == [48] * per_epoch
    from hemacnn.training.recipe import progressive_size

    assert set(seen[per_epoch:2 * per_epoch]) == {progressive_size(24, 48, 0.5)}
    assert (run / "test_metrics.json").is_file()
    bad = tiny(tmp_path, colour_root, recipe={"progressive": [24, 2]})  # mv2: flatten head
    with pytest.raises(HemacnnError, match="cannot take 24 px"):
        train(bad, out=tmp_path / "bad", progress=False)
    with pytest.raises(HemacnnError, match="start px < data.image_size"):
        load_config(tiny(tmp_path, colour_root, recipe={"progressive": [64, 2]}))
