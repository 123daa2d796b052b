"""Training end to end with a real Lightning Trainer on tiny models and tiny images.

Synthetic images here only exercise mechanics (run folder, resume, DDP, reproducibility);
accuracy is checked on the real sample in test_quick_real.py.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from factories import cli_env, cli_process, onecycle_config, read_metrics, trainer_config
from hemacnn.cli import main
from hemacnn.training.steploss import read_step_loss
from hemacnn.training.train import train

CLASSES = ("BLA", "LYT", "NGS")


def test_run_folder_is_complete_and_self_describing(tiny_run):
    run = tiny_run
    for name in ("config.yaml", "model_card.json", "env.json", "metrics.csv",
                 "test_metrics.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
                 "splits/train.csv", "splits/val.csv", "splits/test.csv",
                 "plots/training_curves.png", "plots/per_class_pr.png"):
        assert (run / name).is_file(), name
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]  # counted from 1, as the console does
    for code in CLASSES:
        assert rows[-1][f"val_precision_{code}"] != "" and rows[-1][f"val_recall_{code}"] != ""
    card = json.loads((run / "model_card.json").read_text())
    assert card["classes"] == list(CLASSES) and card["input_size"] == 48
    assert card["value_range"] == [0, 1] and card["resize_method"] == "nearest"
    env = json.loads((run / "env.json").read_text())
    assert env["seed"] == 1 and env["packages"]["torch"]
    test = json.loads((run / "test_metrics.json").read_text())
    n_test = sum(1 for _ in (run / "splits" / "test.csv").open()) - 1
    assert sum(test["per_class"][c]["support"] for c in CLASSES) == n_test
    assert test["split"] == "test" and test["checkpoint"].endswith("best.ckpt")

    # The checkpoint alone rebuilds the model (nanoGPT style): no config, no run folder.
    from hemacnn.models import build_model

    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    arch = ckpt["hyper_parameters"]["card"]["arch"]
    model = build_model(arch["name"], arch["num_classes"], arch["input_size"], **arch["options"])
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()
                           if k.startswith("model.")})

    # The run optimised CE + l2 * sum(w^2) (trainer_config has model.l2 = 0.001): the validation
    # loss logged after the last epoch exceeds the validation CE by the penalty of the weights
    # that last.ckpt holds (saved right after that validation).
    from hemacnn.models import l2_penalty

    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    model.load_state_dict({k.removeprefix("model."): v for k, v in last["state_dict"].items()
                           if k.startswith("model.")})
    penalty = float(l2_penalty(model, 0.001).detach())
    assert penalty > 1e-3
    gap = float(rows[-1]["val_loss"]) - float(rows[-1]["val_ce"])
    assert gap == pytest.approx(penalty, rel=1e-3, abs=2e-5)


def test_train_fraction_reaches_the_run_and_its_report(tmp_path, synthetic_root):
    run = train(trainer_config(tmp_path, synthetic_root, max_epochs=1),
                overrides=["data.train_fraction=0.5"], out=tmp_path / "run", progress=False)
    meta = json.loads((run / "splits" / "splits.json").read_text())
    # 40 images a class: test 4, validation 7, training 29 -> half (rounded up) 15
    assert meta["counts"]["train"] == dict.fromkeys(CLASSES, 15)
    assert meta["counts"]["val"] == dict.fromkeys(CLASSES, 7)
    assert meta["train_fraction"] == 0.5 and meta["train_unused"] == 3 * 14
    from hemacnn.evaluation.report import load_run

    assert "training on 0.5 of the training images" in load_run(run).split_desc


def test_l2_term_is_in_the_loss_that_is_backpropagated():
    from hemacnn.models import kernel_weights
    from hemacnn.training.train import CellClassifier

    card = {"classes": list(CLASSES), "arch": {"name": "mv3", "num_classes": 3,
                                               "input_size": 48, "options": {"width": 0.125}}}
    opt = {"name": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}
    torch.manual_seed(0)
    x, y = torch.rand(4, 3, 48, 48), torch.tensor([0, 1, 2, 0])
    grads = {}
    for lam in (0.0, 0.01):
        module = CellClassifier(card, {"optimizer": opt, "model": {"l2": lam}})
        torch.manual_seed(1)
        module.model.load_state_dict(CellClassifier(card, {"optimizer": opt}).model.state_dict())
        module.eval()  # no BatchNorm statistics update between the two passes
        loss, ce = module._loss(module(x), y)
        loss.backward()
        grads[lam] = [w.grad.clone() for w in kernel_weights(module.model)]
        weights = [w.detach() for w in kernel_weights(module.model)]
        assert float((loss - ce).detach()) == pytest.approx(lam * sum(float((w ** 2).sum())
                                                           for w in weights), rel=1e-5)
    for g0, g1, w in zip(grads[0.0], grads[0.01], weights, strict=True):
        torch.testing.assert_close(g1 - g0, 2 * 0.01 * w, rtol=1e-3, atol=1e-6)


def test_seeded_runs_are_reproducible(tmp_path, synthetic_root, tiny_run):
    cfg = trainer_config(tmp_path, synthetic_root)

    def losses(out: str, *overrides: str) -> list[tuple[str, str]]:
        run = train(cfg, overrides=list(overrides), out=tmp_path / out, progress=False)
        return [(r["train_loss"], r["val_loss"]) for r in read_metrics(run)]

    first = [(r["train_loss"], r["val_loss"]) for r in read_metrics(tiny_run)]  # run "a"
    assert losses("b") == first
    assert losses("c", "seed=2") != first


def test_resume_of_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "norun")]) == 2
    assert "not a hemacnn run folder" in capsys.readouterr().err


def test_existing_run_folder_is_not_overwritten(tmp_path, synthetic_root, capsys):
    cfg = trainer_config(tmp_path, synthetic_root, max_epochs=1)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--no-progress"]) == 0
    before = (out / "metrics.csv").read_text()
    capsys.readouterr()
    assert main(["train", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == before


def test_train_errors_are_one_line(tmp_path, synthetic_root, capsys):
    cfg = trainer_config(tmp_path, synthetic_root)
    cases = [
        (["train", str(cfg), "data.root=" + str(tmp_path / "missing")], "missing"),
        (["train", str(cfg), "data.classes=[BLA,XYZ]"], "XYZ"),
        (["train", str(cfg), "model.name=resnet"], "resnet"),
        (["train", str(cfg), "trainer.accelerator=tpu"], "trainer settings rejected"),
        (["train", str(cfg), "trainer.precision=16"], "needs a CUDA GPU"),
        (["train", str(cfg), "trainer.sync_batchnorm=true"], "sync_batchnorm needs CUDA GPUs"),
    ]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["train", str(cfg), "--out", str(blocker / "run"), "--no-progress"]) == 2
    assert "a-file is a file" in capsys.readouterr().err
    out = tmp_path / "run"
    for argv, needle in cases:
        assert main(argv + ["--no-progress", "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "Traceback" not in err, err
        assert len(err.splitlines()) == 1, err
        assert not out.exists(), f"{argv} left a half-made run folder"


def test_train_output_to_a_log_file_carries_no_library_noise(tmp_path, synthetic_root):
    # Output to a pipe (a log file, CI) without --no-progress: plain epoch lines, no bar.
    cfg = trainer_config(tmp_path, synthetic_root)  # 6 batches an epoch, log_every_n_steps 10
    # trainer.progress_seconds=0: the in-epoch progress line after every step (default 60 s).
    done = subprocess.run([sys.executable, "-m", "hemacnn.cli", "train", str(cfg), "--out",
                           str(tmp_path / "run"), "trainer.progress_seconds=0"], env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "log_every_n_steps" not in done.stderr and "logging interval" not in done.stderr
    assert "Trainer.fit" not in done.stderr and "Trainer.fit" not in done.stdout
    both = done.stdout + done.stderr
    # Lightning's device notices and model summary table only with --verbose.
    for noise in ("GPU available", "TPU available", "HPU available", "Total params",
                  "| Name"):
        assert noise not in both, both
    lines = done.stdout.splitlines()
    steps = [ln for ln in lines if " step " in ln]
    assert [ln.split()[3] for ln in steps if ln.startswith("epoch 1/2")] == \
        [f"{i}/6" for i in range(1, 7)], done.stdout
    assert re.fullmatch(r"epoch 1/2  step 3/6  loss \d+\.\d{4}  [\d.]+ img/s  ETA \d+:\d\d",
                        steps[2]), steps[2]
    lines = [ln for ln in lines if " step " not in ln]
    epochs = [i for i, ln in enumerate(lines) if ln.startswith("epoch ")]
    assert [lines[i].split()[1] for i in epochs] == ["1/2", "2/2"]
    after = "\n".join(lines[epochs[0]:])
    # No frame of the rich training bar ("Epoch 2/2 ━━━━ 6/6 ...") after the plain lines.
    assert "Epoch " not in after and "━" not in after, after
    assert "stopped: reached max_epochs (2)" in after


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_brings_back_lightnings_summary_and_device_notices(tmp_path, verbose):
    from lightning.pytorch.callbacks import ModelSummary

    from hemacnn.config import TrainerConfig
    from hemacnn.training.train import _lightning_trainer

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    notices = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    notices.addHandler(handler)
    try:
        trainer = _lightning_trainer(TrainerConfig(accelerator="cpu"), tmp_path, [], [],
                                     verbose=verbose, bar=False)
    finally:
        notices.removeHandler(handler)
    assert any(m.startswith("GPU available") for m in seen) == verbose, seen
    assert any(isinstance(c, ModelSummary) for c in trainer.callbacks) == verbose
    from hemacnn.cli import build_parser

    assert build_parser().parse_args(["train", "c.yaml", "--verbose"]).verbose


@pytest.mark.slow  # kill/resume variant: child processes stopped and resumed
def test_killed_run_resumes_losing_at_most_one_epoch(tmp_path, synthetic_root):
    cfg = trainer_config(tmp_path, synthetic_root, max_epochs=5)
    run = tmp_path / "run"
    proc = cli_process(["train", str(cfg), "--out", str(run), "--no-progress"])
    deadline = time.monotonic() + 240
    last = run / "checkpoints" / "last.ckpt"
    while time.monotonic() < deadline and proc.poll() is None:
        # Two epochs in metrics.csv and the second one's last.ckpt written (metrics.csv is
        # written first, at the same epoch end: a kill between the two would find only the
        # first epoch's checkpoint).
        if (run / "metrics.csv").exists() and len(read_metrics(run)) >= 2 and \
                last.is_file() and torch.load(last, weights_only=True)["epoch"] >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "run finished before it could be killed:\n" + proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9: no chance to clean up
    proc.wait()
    before = read_metrics(run)
    done = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
    assert done >= len(before) - 2  # the checkpoint trails the metrics by at most one epoch

    resumed = cli_process(["train", "--resume", str(run), "--no-progress"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    after = read_metrics(run)
    # Epochs 1..5, each once: no gap where the kill was, no replayed epoch written twice.
    assert [r["epoch"] for r in after] == [str(e) for e in range(1, 6)]
    kept = [r for r in before if int(r["epoch"]) <= done]  # `done` epochs were checkpointed
    assert kept
    assert after[: len(kept)] == kept  # finished epochs were not trained again
    assert (run / "test_metrics.json").is_file()

    # The checkpoint carries the random-number state, so the resumed run is the run that was
    # never stopped: same losses and accuracies, epoch for epoch.
    reference = train(cfg, out=tmp_path / "reference", progress=False)

    def without_time(rows):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]

    assert without_time(after) == without_time(read_metrics(reference))


@pytest.mark.slow  # DDP: two processes
def test_ddp_on_two_cpu_processes(tmp_path, synthetic_root):
    cfg = trainer_config(tmp_path, synthetic_root, max_epochs=1, devices=2, strategy="ddp")
    run = tmp_path / "run"
    proc = cli_process(["train", str(cfg), "--out", str(run), "--no-progress"])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "distributed_backend=gloo" in out  # Lightning's banner names the CPU backend
    assert "MEMBER: 2/2" in out  # Lightning names each of the two ranks it started
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(read_metrics(run)) == 1
    assert json.loads((run / "test_metrics.json").read_text())["per_class"]


# --- issue 7: interrupted early, mid-epoch checkpoints, whole logs, plain epoch lines --------

@pytest.mark.slow  # kill/resume variant: child processes stopped and resumed
def test_ctrl_c_before_the_first_epoch_ends_can_be_resumed(tmp_path, synthetic_root):
    cfg = trainer_config(tmp_path, synthetic_root, max_epochs=2)
    run = tmp_path / "run"
    # A suite started in the background (nohup, `&`) inherits SIGINT ignored: undo that here.
    proc = cli_process(["train", str(cfg), "--out", str(run), "--no-progress"],
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "config.yaml").exists():
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    # Whatever the message says, it must lead somewhere: the printed way on works.
    resumed = cli_process(["train", "--resume", str(run), "--no-progress"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert [r["epoch"] for r in read_metrics(run)] == ["1", "2"]
    assert (run / "test_metrics.json").is_file()


def _batch_progress(ckpt: Path) -> tuple[int, int]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    current = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    return state["epoch"], current["processed"]


@pytest.mark.slow  # kill/resume variant: child processes stopped and resumed
def test_mid_epoch_checkpoint_resumes_at_the_batch_it_stopped(tmp_path, synthetic_root):
    # checkpoint_minutes tiny: a time-based checkpoint after (nearly) every batch.
    cfg = trainer_config(tmp_path, synthetic_root, max_epochs=2, checkpoint_minutes=1e-5)
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    proc = cli_process(["train", str(cfg), "--out", str(run), "--no-progress"])
    deadline = time.monotonic() + 240
    stopped_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        if last.exists():
            os.killpg(proc.pid, signal.SIGSTOP)  # freeze it while the checkpoint is read
            epoch, done = _batch_progress(last)
            if epoch >= 1 and done > 0:
                stopped_at = (epoch, done)
                os.killpg(proc.pid, signal.SIGKILL)
                break
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    proc.wait()
    assert stopped_at, "no mid-epoch checkpoint was seen"

    resumed = cli_process(["train", "--resume", str(run), "--no-progress"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "not resumable" not in out  # Lightning's warning for loaders that restart the epoch
    reference = train(cfg, out=tmp_path / "reference", progress=False)
    final = torch.load(last, map_location="cpu", weights_only=True)
    ref = torch.load(reference / "checkpoints" / "last.ckpt", map_location="cpu",
                     weights_only=True)
    assert final["global_step"] == ref["global_step"]  # every batch trained once, none twice
    # Same batches in the same order with the same random draws: the same model.
    for key, value in ref["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][key], value, msg=key)
    after = read_metrics(run)
    assert [r["epoch"] for r in after] == ["1", "2"]
    assert [r["val_loss"] for r in after] == [r["val_loss"] for r in read_metrics(reference)]


@pytest.mark.slow  # kill/resume variant: child processes stopped and resumed
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_mid_epoch_saves_after_the_batch_and_resumes_exactly(tmp_path, synthetic_root,
                                                                      onecycle_reference, sig):
    # 22 mini-batches an epoch (87 images, 4 a batch) and no time-based checkpoints: only the
    # signal's save can be mid-epoch.
    # With a per-step schedule, whose length must be known without replaying the epoch, and
    # an EMA, which must have averaged the batch the signal stopped after when it saves.
    cfg = onecycle_config(tmp_path, synthetic_root)
    run = tmp_path / "run"
    proc = cli_process(["train", str(cfg), "--out", str(run), "--no-progress"],
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "metrics.csv").is_file() and read_metrics(run):
            os.killpg(proc.pid, sig)  # during epoch 1
            break
        time.sleep(0.01)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert f"{sig.name}: stopping after this mini-batch" in out
    assert f"continue it with `hemacnn train --resume {run}`" in out
    assert "Traceback" not in out
    epoch, done = _batch_progress(run / "checkpoints" / "last.ckpt")
    if sig == signal.SIGTERM and (epoch, done) == (0, 22):
        pass  # Lightning's own SIGTERM check stopped it at the epoch's end (saved there)
    else:
        assert epoch == 1 and 0 < done < 22, (epoch, done)  # saved mid-epoch, after a batch
    assert len(read_step_loss(run / "step_loss.csv")) == 22 * epoch + done

    resumed = cli_process(["train", "--resume", str(run), "--no-progress"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    reference = onecycle_reference  # the same config, never interrupted
    final, ref = (torch.load(r / "checkpoints" / "last.ckpt", map_location="cpu",
                             weights_only=True) for r in (run, reference))
    # last.ckpt is the last epoch's (step 66) even when that epoch did not improve on the best
    # (Lightning's save_last would have left it at the best epoch). Whether the last epoch is
    # the best depends on the CPU's arithmetic (AVX2 vs AVX-512), so it is not a precondition.
    assert final["global_step"] == ref["global_step"] == 66
    assert int(final["state_dict"]["ema.n_averaged"]) == 66  # every step averaged once
    for key, value in ref["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][key], value, msg=key)
    steps = read_step_loss(run / "step_loss.csv")
    assert [int(r["step"]) for r in steps] == list(range(66))  # none lost, none twice
    assert steps == read_step_loss(reference / "step_loss.csv")

    # The one-cycle schedule was laid out for 3 epochs: more on --resume is a clear error.
    stamp = (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    for override, was in (("trainer.max_epochs=5", "3"), ("recipe.schedule=none", "onecycle")):
        again = cli_process(["train", "--resume", str(run), override, "--no-progress"])
        out, _ = again.communicate(timeout=120)
        assert again.returncode == 2, out
        assert f"error: {override} on --resume of {run}: the run started with {was}" in out
        assert "Traceback" not in out
    assert (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns == stamp


@pytest.mark.slow  # kill/resume variant: child processes stopped and resumed
def test_resume_keeps_lightnings_csv_log_whole(tmp_path, synthetic_root):
    cfg = trainer_config(tmp_path, synthetic_root, max_epochs=1)
    run = train(cfg, out=tmp_path / "run", progress=False)
    train(resume=run, overrides=["trainer.max_epochs=2"], progress=False)
    with (run / "logs" / "csv" / "metrics.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val_loss")]
    assert [int(float(r["epoch"])) for r in rows] == [0, 1]


def test_plain_epoch_lines_and_why_training_stopped(tmp_path, synthetic_root, capsys):
    cfg = trainer_config(tmp_path, synthetic_root, max_epochs=2)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"], out
    rows = read_metrics(tmp_path / "run")
    for line, row in zip(lines, rows, strict=True):
        assert f"train_loss {float(row['train_loss']):.4f}" in line
        assert f"val_loss {float(row['val_loss']):.4f}" in line
        assert "train_acc" in line and "val_acc" in line and line.rstrip().endswith(" s")
    best = min(range(2), key=lambda i: float(rows[i]["val_loss"]))
    stop = next(ln for ln in out.splitlines() if ln.startswith("stopped: "))
    assert "reached max_epochs (2)" in stop
    assert f"best epoch {best + 1} (val_loss {float(rows[best]['val_loss']):.4f})" in stop


_DDP_STEP = r'''
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from hemacnn.config import build_config
from hemacnn.training.train import CellClassifier, _trainer

out = Path(sys.argv[1])
cfg = build_config({"seed": 3, "trainer": {
    "max_epochs": 1, "patience": None, "accelerator": "cpu", "devices": 2, "strategy": "ddp",
    "limit_train_batches": 1, "limit_val_batches": 0, "checkpoint_minutes": None}})
card = {"classes": ["A", "B", "C"], "arch": {"name": "mv3", "num_classes": 3, "input_size": 48,
        "options": {"width": 0.125, "noise_std": 0.0, "dropout": 0.0}}}
opt = {"name": "adam", "lr": 1.0, "beta1": 0.9, "beta2": 0.999, "eps": 10.0}
# eps far above |g|: Adam's first step is then about lr * g / eps, proportional to the gradient
# (with the usual eps it is lr * sign(g): rounding noise in near-zero gradients flips signs).
torch.manual_seed(0)
data = TensorDataset(torch.rand(16, 3, 48, 48), torch.arange(16) % 3)


class Dump(Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
        self.batch = [t.clone() for t in batch]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        after = {k: v.detach().clone() for k, v in module.model.named_parameters()}
        torch.save({"before": self.before, "after": after, "batch": self.batch},
                   out / f"rank{trainer.global_rank}.pt")


trainer = _trainer(cfg, out / "run", card["classes"], progress=False)
trainer.callbacks.append(Dump())
module = CellClassifier(card, {"optimizer": opt, "model": {"l2": 0.001}})
trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=4))
'''


@pytest.mark.slow  # DDP: two processes
def test_ddp_ranks_train_one_model_as_one_process_would(tmp_path):
    """Both ranks end the step with the same weights, those of one process stepping on the
    union of their batches (BatchNorm normalises each rank's half, as DDP does)."""
    from hemacnn.training.train import CellClassifier

    script = tmp_path / "ddp_step.py"
    script.write_text(_DDP_STEP)
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], env=cli_env(), cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in ranks[0]["after"].items():
        torch.testing.assert_close(ranks[1]["after"][key], value, rtol=0, atol=0, msg=key)
    x0, y0 = ranks[0]["batch"]
    x1, y1 = ranks[1]["batch"]
    assert not torch.equal(x0, x1)  # each rank had its own half of the data

    card = {"classes": ["A", "B", "C"], "arch": {"name": "mv3", "num_classes": 3,
            "input_size": 48, "options": {"width": 0.125, "noise_std": 0.0, "dropout": 0.0}}}
    opt = {"name": "adam", "lr": 1.0, "beta1": 0.9, "beta2": 0.999, "eps": 10.0}
    single = CellClassifier(card, {"optimizer": opt, "model": {"l2": 0.001}})
    single.model.load_state_dict(ranks[0]["before"])
    single.train()
    optimizer = torch.optim.Adam(single.parameters(), lr=1.0, betas=(0.9, 0.999), eps=10.0)
    halves = [single._loss(single(x), y)[0] for x, y in ((x0, y0), (x1, y1))]
    ((halves[0] + halves[1]) / 2).backward()  # the mean loss over the union batch
    optimizer.step()
    moved = 0
    for key, value in single.model.named_parameters():
        torch.testing.assert_close(ranks[0]["after"][key], value.detach(), rtol=1e-4, atol=1e-5,
                                   msg=key)
        moved += int(not torch.equal(value.detach(), ranks[0]["before"][key]))
    assert moved > 10  # the step changed the weights: the comparison means something
