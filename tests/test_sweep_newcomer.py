"""The sweep on data a newcomer has (the demo images shipped in the package): a profile's
classes that the data lacks are one error before anything runs; a profile's note that an
override makes untrue is not printed; optimizer columns only where the optimizer has them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hemacnn.cli import main
from hemacnn.studies import expand_points, load_study
from hemacnn.studies.summary import _applies
from hemacnn.studies.sweep import profile_note, study_record

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
    assert "840" not in note and "data.classes overridden" in note
    points = expand_points(spec, "cpu", over)
    assert study_record(spec, "cpu", points, over)["profile_note"] == note


def test_optimizer_columns_only_where_the_optimizer_has_them():
    adam = {"optimizer": {"name": "adam", "rho": 0.95, "beta1": 0.9}}
    adadelta = {"optimizer": {"name": "adadelta", "rho": 0.9, "beta1": 0.9}}
    assert _applies(adam, "optimizer.beta1") and not _applies(adam, "optimizer.rho")
    assert _applies(adadelta, "optimizer.rho") and not _applies(adadelta, "optimizer.beta2")
    assert _applies(adadelta, "optimizer.lr") and _applies(adadelta, "data.image_size")
