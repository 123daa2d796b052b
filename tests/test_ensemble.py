"""``hemacnn ensemble``: a folder that averages runs and that every run command accepts.

Tiny synthetic runs (mechanics only): two folds of a holdout cross-validation share one test
split, so their ensemble is tested on images neither member saw.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from factories import image_folder, tiny_config
from hemacnn.cli import main


@pytest.fixture(scope="module")
def fold_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two runs of one config: holdout folds 0 and 1 of 2 (same test split, other val/train)."""
    base = tmp_path_factory.mktemp("ens")
    root = image_folder(base / "data", {"LYT": 14, "neutrophil": 14, "platelet": 14})
    path = tiny_config(base / "tiny.yaml", root,
                       data={"classes": "all", "folds": 2, "fold_test": "holdout"})
    runs = []
    for fold in (0, 1):
        run = base / f"fold{fold}"
        assert main(["train", str(path), f"data.fold={fold}", "--out", str(run),
                     "--no-progress"]) == 0
        runs.append(run)
    return runs[0], runs[1], root


def _probs_by_path(folder: Path) -> dict[str, np.ndarray]:
    """Test probabilities by file (train's own test pass saves them in test.csv order)."""
    with np.load(folder / "predictions_test.npz") as z:
        paths = [str(p) for p in z["paths"]] or [
            line.split(",")[0] for line in
            (folder / "splits" / "test.csv").read_text().splitlines()[1:]]
        return dict(zip(paths, z["probs"], strict=True))


def test_ensemble_averages_members_and_works_like_a_run(tmp_path, fold_runs, capsys):
    run0, run1, root = fold_runs
    capsys.readouterr()
    ens = tmp_path / "ens"
    assert main(["ensemble", str(run0), str(run1), "--out", str(ens), "--weights", "1,3"]) == 0
    out = capsys.readouterr().out
    assert "macro F1: ensemble" in out and "best member" in out
    assert (ens / "splits" / "test.csv").read_text().splitlines()[1:] == sorted(
        (run0 / "splits" / "test.csv").read_text().splitlines()[1:])

    # The ensemble's probabilities are the weighted mean of the members' on the same files.
    p0, p1, pe = _probs_by_path(run0), _probs_by_path(run1), _probs_by_path(ens)
    assert set(pe) == set(p0) == set(p1)
    for path, p in pe.items():
        np.testing.assert_allclose(p, 0.25 * p0[path] + 0.75 * p1[path], atol=2e-5)
    members = json.loads((ens / "ensemble_members.json").read_text())
    assert members["tta"] is False  # as the members' own tests (no recipe.test_tta)
    assert [m["weight"] for m in members["members"]] == [0.25, 0.75]
    for m, run in zip(members["members"], (run0, run1), strict=True):
        own = json.loads((run / "test_metrics.json").read_text())
        assert m["macro_f1"] == pytest.approx(own["macro_f1"])

    # evaluate, report, compare and predict take the folder like a run.
    saved = json.loads((ens / "evaluation_test.json").read_text())
    assert main(["evaluate", str(ens), "--json", "--out", str(tmp_path / "again")]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["macro_f1"] == pytest.approx(saved["macro_f1"])
    assert again["n"] == len(pe)
    assert main(["evaluate", str(ens), "--data", str(root)]) == 0
    assert main(["report", str(ens), str(run0)]) == 0
    report = (ens / "report.md").read_text()
    assert "ensemble 48px" in report and "ensemble of: " in report
    assert f"(weight 0.750, macro F1 alone {members['members'][1]['macro_f1']:.3f}" in report
    assert main(["compare", str(run0), str(run1), str(ens)]) == 0
    image = root / "platelet" / "platelet_000.jpg"
    assert main(["predict", str(ens), str(image), "--json"]) == 0
    capsys.readouterr()
    assert main(["predict", str(ens), str(image), "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)[0]
    probs = {k[2:]: v for k, v in pred.items() if k.startswith("p_")}
    assert pred["status"] == "ok" and set(probs) == {"LYT", "neutrophil", "platelet"}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)


def test_ensemble_with_tta_scores_members_the_same_way(tmp_path, fold_runs, capsys):
    run0, run1, _ = fold_runs
    ens = tmp_path / "ens"
    assert main(["ensemble", str(run0), str(run1), "--out", str(ens), "--tta"]) == 0
    assert "each model averaging 8 dihedral views (TTA)" in capsys.readouterr().out
    members = json.loads((ens / "ensemble_members.json").read_text())
    assert members["tta"] is True
    assert json.loads((ens / "evaluation_test_tta.json").read_text())["tta"] is True
    member_probs = []
    for m, run in zip(members["members"], (run0, run1), strict=True):
        assert main(["evaluate", str(run), "--tta", "--json", "--out", str(tmp_path / run.name)
                     ]) == 0
        own = json.loads(capsys.readouterr().out)
        assert m["macro_f1"] == pytest.approx(own["macro_f1"])  # the member's TTA figure
        member_probs.append(_probs_by_path_named(tmp_path / run.name, "test_tta"))
    for path, p in _probs_by_path_named(ens, "test_tta").items():
        np.testing.assert_allclose(p, 0.5 * member_probs[0][path] + 0.5 * member_probs[1][path],
                                   atol=2e-5)
    from hemacnn.evaluation.report import load_run

    assert load_run(ens).evaluation["tta"] is True  # the report finds the TTA evaluation


def _probs_by_path_named(folder: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(folder / f"predictions_{name}.npz") as z:
        return dict(zip([str(p) for p in z["paths"]], z["probs"], strict=True))


def test_ensemble_rejects_bad_input_with_one_line(tmp_path, fold_runs, capsys):
    run0, run1, _ = fold_runs
    cases = [
        ([str(run0)], "at least two runs"),
        ([str(run0), str(run1), "--weights", "1"], "1 weights for 2 runs"),
        ([str(run0), str(run1), "--weights", "1,x"], "not a comma-separated list"),
        ([str(run0), str(run1), "--weights", "0,0"], "positive sum"),
        ([str(run0), str(tmp_path)], "not a hemacnn run folder"),
    ]
    for args, message in cases:
        assert main(["ensemble", *args, "--out", str(tmp_path / "e")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
        assert not (tmp_path / "e").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["ensemble", str(run0), str(run1), "--out", str(busy)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    other = tmp_path / "other"
    other.mkdir()
    card = json.loads((run0 / "model_card.json").read_text())
    (other / "model_card.json").write_text(json.dumps({**card, "input_size": 64}))
    (other / "checkpoints").symlink_to(run0 / "checkpoints")
    assert main(["ensemble", str(run0), str(other), "--out", str(tmp_path / "e")]) == 2
    assert "input_size 64" in capsys.readouterr().err
