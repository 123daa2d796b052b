"""The sweep on data a newcomer has (the demo images shipped in the package): a profile's
classes that the data lacks are one error before anything runs; a profile's note that an
override makes untrue is not printed; optimizer columns only where the optimizer has them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from factories import read_csv, two_class_folder, write_study
from hemacnn.cli import main
from hemacnn.studies import expand_points, load_study
from hemacnn.studies.summary import applies
from hemacnn.studies.sweep import profile_note, study_record
from hemacnn.studies.verdicts import CHANCE_MARGIN, TINY_VAL, learning_marks

STUDIES = Path(__file__).resolve().parents[1] / "configs" / "studies"
DEMO = Path(__file__).resolve().parents[1] / "src" / "hemacnn" / "demo" / "data"


@pytest.fixture()
def demo_root(tmp_path) -> Path:
    root = tmp_path / "demo"
    shutil.copytree(DEMO, root)  # BLA, LYT, NGS: 45 images each
    return root


@pytest.mark.parametrize("study", ["input_size", "architectures", "optimizers"])
def test_cpu_profile_on_demo_data_is_one_error_before_anything_runs(tmp_path, demo_root,
                                                                    capsys, study):
    out = tmp_path / "out"
    code = main(["sweep", str(STUDIES / f"{study}.yaml"), "--profile", "cpu", "--out", str(out),
                 f"data.root={demo_root}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: study {study} (profile cpu) trains on classes ART, BLA, "
                          f"LYT, NGS, but {demo_root} has no usable image of ART "
                          "(classes there: BLA, LYT, NGS)"), err
    assert "data.classes=[BLA,LYT,NGS]" in err
    assert not out.exists()


def test_overridden_classes_drop_the_profiles_note():
    spec = load_study(STUDIES / "input_size.yaml")
    assert "840 images" in profile_note(spec, "cpu", ["data.root=/d"])
    over = ["data.root=/d", "data.classes=[BLA,LYT,NGS]"]
    note = profile_note(spec, "cpu", over)
    assert "840" not in note and note == (
        "the study file's note for this profile is not shown, because the command line sets "
        "data.classes and the note describes the profile's own data.")
    points = expand_points(spec, "cpu", over)
    assert study_record(spec, "cpu", points, over)["profile_note"] == note


def test_optimizer_columns_only_where_the_optimizer_has_them():
    adam = {"optimizer": {"name": "adam", "rho": 0.95, "beta1": 0.9}}
    adadelta = {"optimizer": {"name": "adadelta", "rho": 0.9, "beta1": 0.9}}
    assert applies(adam, "optimizer.beta1") and not applies(adam, "optimizer.rho")
    assert applies(adadelta, "optimizer.rho") and not applies(adadelta, "optimizer.beta2")
    assert applies(adadelta, "optimizer.lr") and applies(adadelta, "data.image_size")


def test_one_seed_says_before_training_that_no_claim_can_be_decided(tmp_path, capsys):
    # Two points of a tiny study (one epoch each) on 60 images: 10 validation images.
    root = two_class_folder(tmp_path / "data")
    claim = {"id": "lr", "text": "the smaller rate is better", "kind": "higher",
             "metric": "test_macro_f1", "a": "adam-lr0.003", "b": "adam-lr0.1"}
    study = write_study(tmp_path, {"optimizer.name": ["adam"], "optimizer.lr": [0.003, 0.1]},
                        claims=[claim])
    out = tmp_path / "out"
    assert main(["sweep", str(study), "--out", str(out), "--no-progress", "--seeds", "1",
                 f"data.root={root}"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "2 of 2 points to run"  # the note next, before anything trains
    assert printed[1] == ("note: one seed per point gives no interval over seeds, so none of "
                          "this study's claims (1) can be decided: each will be inconclusive; "
                          "run --seeds 3 or more to decide them")
    md = (out / "summary.md").read_text()
    assert "One seed per point: no interval over seeds" in md
    seeds = read_csv(out / "summary_seeds.csv")
    assert all("tiny validation set: 10 images" in r["marks"] for r in seeds)
    assert f"tiny validation set: 10 images (under {TINY_VAL}" in md
    assert f"within {CHANCE_MARGIN:g} of chance, 1/number of classes" in md


def test_weak_learning_is_best_validation_accuracy_near_chance():
    assert learning_marks(0.9, 2, 500) == []
    weak = learning_marks(0.40, 3, 500)  # chance 0.333: within the margin
    assert weak == [f"weak learning: best validation accuracy 0.400 is within {CHANCE_MARGIN:g} "
                    "of chance (0.333 = 1/3 classes)"]
    assert learning_marks(0.9, 2, 20)[0].startswith("tiny validation set: 20 images")
    assert learning_marks(None, None, None) == []
