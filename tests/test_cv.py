"""``hemacnn cv``: K folds as run folders on the sweep engine, mean ± sd, only missing folds rerun.

Tiny synthetic data and models (mechanics only).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from factories import image_folder, tiny_config
from hemacnn.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("cv")
    root = image_folder(base / "data", {"LYT": 12, "neutrophil": 12, "platelet": 12})
    path = tiny_config(base / "tiny.yaml", root, data={"classes": "all"})
    return path, root


def test_cv_trains_every_fold_summarises_and_reruns_only_missing(tmp_path, tiny, capsys,
                                                                 monkeypatch):
    from hemacnn.studies import runner

    config, root = tiny
    out = tmp_path / "cv"
    args = ["cv", str(config), "--folds", "3", "--out", str(out), "--no-progress"]
    real_train, calls = runner.train_point, []

    def interrupted_on_second(point, run_dir, progress):
        calls.append(point.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second fold trains
        return real_train(point, run_dir, progress)

    monkeypatch.setattr(runner, "train_point", interrupted_on_second)
    assert main(args) != 0
    assert "3 of 3 points to run" in capsys.readouterr().out
    done = [i for i in range(3) if (out / "runs" / f"fold{i}" / "test_metrics.json").is_file()]
    assert len(done) == 1
    stamp = (out / "runs" / f"fold{done[0]}" / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    monkeypatch.setattr(runner, "train_point", real_train)

    # Re-running trains only the two missing folds, then nothing at all.
    assert main(args) == 0
    second = capsys.readouterr().out
    assert "2 of 3 points to run" in second and "macro f1 |" in second
    assert (out / "runs" / f"fold{done[0]}" / "checkpoints" / "best.ckpt").stat(
    ).st_mtime_ns == stamp
    assert main(args) == 0
    assert "0 of 3 points to run" in capsys.readouterr().out

    folds = [json.loads((out / "runs" / f"fold{i}" / "test_metrics.json").read_text())
             for i in range(3)]
    # Rotating test folds: every image is tested exactly once.
    tested = [set((out / "runs" / f"fold{i}" / "splits" / "test.csv").read_text()
                  .splitlines()[1:]) for i in range(3)]
    assert sum(len(t) for t in tested) == len(set().union(*tested)) == 36

    summary = json.loads((out / "summary.json").read_text())
    f1 = [f["macro_f1"] for f in folds]
    assert summary["stats"]["macro_f1"]["mean"] == pytest.approx(np.mean(f1))
    assert summary["stats"]["macro_f1"]["sd"] == pytest.approx(np.std(f1, ddof=1))
    lyt = [f["per_class"]["LYT"]["f1"] for f in folds]
    assert summary["per_class"]["LYT"]["f1"]["mean"] == pytest.approx(np.mean(lyt))
    assert summary["pooled"]["n"] == 36
    with (out / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["fold"] for r in rows] == ["fold0", "fold1", "fold2", "mean", "sd"]
    assert "f1_platelet" in rows[0]
    md = (out / "summary.md").read_text()
    assert "| macro f1 | " in md and " ± " in md and "Matek" not in md
    assert (out / "cv_f1.png").stat().st_size > 1000
    (out / "summary.md").unlink()
    assert main(["cv", "--report", str(out)]) == 0
    assert (out / "summary.md").read_text() == md

    # A changed config in the same folder is refused before anything trains.
    assert main([*args, "optimizer.lr=0.5"]) == 2
    assert "different config" in capsys.readouterr().err


def test_cv_holdout_folds_and_their_ensemble(tmp_path, tiny, capsys):
    config, _ = tiny
    out = tmp_path / "cv"
    assert main(["cv", str(config), "--folds", "2", "data.fold_test=holdout", "--out", str(out),
                 "--ensemble", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "macro F1: ensemble" in text
    tests = {(out / "runs" / f"fold{i}" / "splits" / "test.csv").read_text() for i in range(2)}
    assert len(tests) == 1  # one held-out test split for both folds
    members = json.loads((out / "ensemble" / "ensemble_members.json").read_text())
    assert len(members["members"]) == 2 and members["n"] == 3
    assert json.loads((out / "summary.json").read_text())["pooled"] is None


def test_cv_bad_input_is_one_line(tmp_path, tiny, capsys):
    config, _ = tiny
    for args, message in [
        (["--folds", "1"], "--folds must be at least 2"),
        (["--folds", "3", "data.fold=1"], "set by cv itself"),
        (["--folds", "3", "model.nope=1"], "unknown config key model.nope"),
        ([], "--folds K"),
    ]:
        assert main(["cv", str(config), *args, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err
        assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cv_pools_the_tta_predictions_of_folds_tested_with_tta(tmp_path, tiny):
    """Folds whose end-of-training test used TTA keep it as predictions_test_tta.npz: the pooled
    out-of-fold figures read those (and are the 8-view ones the folds' own tests report)."""
    config, _ = tiny
    out = tmp_path / "cv"
    assert main(["cv", str(config), "--folds", "2", "recipe.test_tta=true", "--out", str(out),
                 "--no-progress"]) == 0
    folds = [out / "runs" / f"fold{i}" for i in range(2)]
    assert all((f / "predictions_test_tta.npz").is_file() for f in folds)
    assert not any((f / "predictions_test.npz").exists() for f in folds)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pooled"]["n"] == 36
    ys, ps = [], []
    for f in folds:
        with np.load(f / "predictions_test_tta.npz") as z:
            ys.append(z["y_true"])
            ps.append(z["probs"])
    accuracy = float((np.concatenate(ps).argmax(1) == np.concatenate(ys)).mean())
    assert summary["pooled"]["accuracy"] == pytest.approx(accuracy)
