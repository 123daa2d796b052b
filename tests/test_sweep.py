"""`hemacnn sweep` end to end on tiny models and tiny synthetic images (mechanics only).

A real Lightning trainer, a real Optuna SQLite storage and real processes that are killed with
SIGKILL: the study folder, resume, and exactly-once scheduling across workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from factories import cli_process, read_csv, two_class_folder, write_study
from hemacnn.cli import main


@pytest.fixture(scope="module")
def two_class_root(tmp_path_factory) -> Path:
    """Two classes of 48 px JPEGs: reddish and bluish noise (enough for mechanics)."""
    return two_class_folder(tmp_path_factory.mktemp("sweepdata"))


def trained_trials(out: Path, name: str = "tiny-paper") -> list[optuna.trial.FrozenTrial]:
    """Trials that really trained (finished points re-claimed after a kill are not counted)."""
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")
    return [t for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("trained")]


def sweep_cli(args: list[str]) -> subprocess.Popen:
    return cli_process(["sweep", *args, "--no-progress"])


def test_small_study_end_to_end(tmp_path, two_class_root, capsys):
    study = write_study(tmp_path, {"optimizer.name": ["adam", "adadelta"],
                                   "optimizer.lr": [0.003, 0.1]})
    out = tmp_path / "out"
    argv = ["sweep", str(study), "--out", str(out), "--no-progress", f"data.root={two_class_root}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "4 of 4 points to run"
    rows = read_csv(out / "summary.csv")
    assert [r["point"] for r in rows] == ["adam-lr0.003", "adam-lr0.1", "adadelta-lr0.003",
                                         "adadelta-lr0.1"]
    assert {"point", "optimizer", "lr", "final_train_loss", "mean_train_loss"} <= set(rows[0])
    for row in rows:
        run = out / "runs" / row["point"]
        assert (run / "test_metrics.json").is_file()  # an ordinary run folder
        losses = [float(r["loss"]) for r in read_csv(run / "step_loss.csv")]
        assert len(losses) == 6  # 48 training images / batch 8, one epoch
        assert float(row["mean_train_loss"]) == pytest.approx(np.mean(losses), rel=1e-4)
        assert row["optimizer"] == yaml.safe_load((run / "config.yaml").read_text())[
            "optimizer"]["name"]
    md = (out / "summary.md").read_text()
    assert "| point | optimizer | lr | final_train_loss | mean_train_loss |" in md
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert len(trained_trials(out)) == 4

    # Again: nothing to train, the same summary; --report rebuilds it from the folders alone.
    ckpt = out / "runs" / rows[0]["point"] / "checkpoints" / "last.ckpt"
    stamp = ckpt.stat().st_mtime_ns
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0] == "0 of 4 points to run"
    assert ckpt.stat().st_mtime_ns == stamp
    before = (out / "summary.csv").read_text()
    (out / "summary.csv").unlink()
    assert main(["sweep", "--report", str(out)]) == 0
    assert (out / "summary.csv").read_text() == before
    assert len(trained_trials(out)) == 4

    # A deleted run folder is trained again although its trial is COMPLETE in the storage.
    import shutil

    gone = out / "runs" / rows[1]["point"]
    shutil.rmtree(gone)
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "1 of 4 points to run (1 trained before, run folder deleted)")
    assert (gone / "test_metrics.json").is_file() and len(trained_trials(out)) == 5
    assert (out / "summary.csv").read_text().count("\n") == before.count("\n")
    # ... but not by a worker whose study folder is another disk (another machine's local
    # folder, here one with another id): the trials finished there are trusted.
    shutil.rmtree(gone)
    (out / ".out_id").write_text("another-disk\n")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "0 of 4 points to run"
    assert f"finished by workers on another machine, whose run folders are not in {out}: " \
        f"{rows[1]['point']}" in printed
    assert not gone.exists() and len(trained_trials(out)) == 5


@pytest.mark.slow  # kill/resume variant: sweep workers in child processes
def test_killed_sweep_resumes_only_what_is_missing(tmp_path, two_class_root):
    # Six epochs, so that the kill after the second epoch's row lands inside the point (with
    # four, the rest could finish within one poll on an idle machine).
    study = write_study(tmp_path, {"optimizer.lr": [0.003, 0.001]}, epochs=6)
    out = tmp_path / "out"
    args = [str(study), "--out", str(out), f"data.root={two_class_root}"]
    proc = sweep_cli(args)
    second = out / "runs" / "lr0.001"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (second / "metrics.csv").is_file() and len(read_csv(second / "metrics.csv")) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "sweep finished before it could be killed:\n" + proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)  # the worker dies without telling the storage
    proc.wait()
    first = out / "runs" / "lr0.003"
    assert (first / "test_metrics.json").is_file() and not (second / "test_metrics.json").exists()
    first_stamp = (first / "test_metrics.json").stat().st_mtime_ns
    before = read_csv(second / "metrics.csv")

    again = sweep_cli(args)
    printed, _ = again.communicate(timeout=300)
    assert again.returncode == 0, printed
    assert printed.splitlines()[0] == "1 of 2 points to run (1 resume from a checkpoint)"
    assert "point lr0.001: resuming" in printed and "lr0.003: training" not in printed
    assert (first / "test_metrics.json").stat().st_mtime_ns == first_stamp  # not retrained
    after = read_csv(second / "metrics.csv")
    assert [r["epoch"] for r in after] == ["1", "2", "3", "4", "5", "6"]
    assert after[0] == before[0]  # the epoch before the kill was kept, not trained again
    steps = [int(r["step"]) for r in read_csv(second / "step_loss.csv")]
    assert steps == list(range(6 * 6))  # one loss per mini-batch, none lost or doubled
    modes = {t.params["point"]: t.user_attrs["mode"] for t in trained_trials(out)}
    assert modes == {"lr0.003": "trained", "lr0.001": "resumed"}
    assert len(read_csv(out / "summary.csv")) == 2


@pytest.mark.slow  # kill/resume variant: sweep workers in child processes
def test_two_workers_on_one_storage_run_each_point_once(tmp_path, two_class_root):
    study = write_study(tmp_path, {"optimizer.lr": [0.003, 0.002, 0.001, 0.0005, 0.0002]})
    out = tmp_path / "out"
    args = [str(study), "--out", str(out), f"data.root={two_class_root}"]
    # Two sweep commands on one storage, the first itself with two worker processes.
    procs = [sweep_cli([*args, "--workers", "2"]), sweep_cli(args)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    started = [line.split(":")[0].removeprefix("point ") for log in logs
               for line in log.splitlines() if line.startswith("point ") and " -> " in line]
    names = ["lr0.003", "lr0.002", "lr0.001", "lr0.0005", "lr0.0002"]
    assert sorted(started) == sorted(names)  # each point trained by exactly one worker
    trials = trained_trials(out)
    assert sorted(t.params["point"] for t in trials) == sorted(names)
    assert len({t.user_attrs["pid"] for t in trials}) <= 3
    for name in names:
        assert len(read_csv(out / "runs" / name / "metrics.csv")) == 1


@pytest.mark.parametrize(("change", "needle"), [
    ({"grids": {"optimizer.lr": [0.1]}}, "unknown key grids"),
    ({"grid": {}}, "the grid is empty"),
    ({"grid": {"optimizer.lr": []}}, "grid key optimizer.lr has no values"),
    ({"grid": {"optimizer.lr": [0.01, -1.0]}}, "point lr-1.0: config key optimizer.lr"),
    ({"grid": {"model.depth": [3]}}, "unknown config key model.depth"),
    ({"grid": {"model.name": ["mv9"]}}, "unknown model 'mv9'"),
    ({"profiles": {"cpu": {"sett": {}}}}, "unknown key profiles.cpu.sett"),
])
def test_bad_study_files_fail_before_anything_runs(tmp_path, capsys, change, needle):
    study = write_study(tmp_path, {"optimizer.lr": [0.01]})
    tree = yaml.safe_load(study.read_text())
    tree.pop("grid")
    tree.update(change)
    study.write_text(yaml.safe_dump(tree))
    out = tmp_path / "out"
    assert main(["sweep", str(study), "--out", str(out), "data.root=/nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_sweep_usage_errors(tmp_path, capsys):
    study = write_study(tmp_path, {"optimizer.lr": [0.01, 0.02]})
    cases = [
        (["sweep"], "give a study file"),
        (["sweep", str(study), "--profile", "gpu", "data.root=/x"], "no profile 'gpu'"),
        (["sweep", str(study), "optimizer.lr=0.5", "data.root=/x"], "override optimizer.lr"),
        (["sweep", str(study), "--out", str(tmp_path / "o")], "data.root is not set"),
        (["sweep", "--report", str(tmp_path)], "is not a study folder"),
        (["sweep", str(tmp_path / "none.yaml")], "not found"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_study_folder_refuses_another_study(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"study": "other", "profile": "paper"}))
    study = write_study(tmp_path, {"optimizer.lr": [0.01]})
    assert main(["sweep", str(study), "--out", str(out), "data.root=/x"]) == 2
    assert "holds study other" in capsys.readouterr().err
