"""A run folder whose checkpoint comes from another run is refused: one error line naming both
files, exit code 2, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from factories import fake_labelled_run, fake_run, model_card, save_checkpoint
from hemacnn.cli import main
from hemacnn.inference.loading import load_checkpoint


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return fake_labelled_run(tmp_path)


def _swap_checkpoint(run: Path, other: Path, tmp_path: Path) -> Path:
    """A copy of ``run`` whose checkpoints/best.ckpt is ``other``'s."""
    copy = tmp_path / "copied run"
    shutil.copytree(run, copy)
    shutil.copy(other / "checkpoints" / "best.ckpt", copy / "checkpoints" / "best.ckpt")
    return copy


def _refused(args: list[str], copy: Path, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert str(copy / "checkpoints" / "best.ckpt") in err and str(copy / "model_card.json") in err
    return err


def test_a_checkpoint_with_other_classes_is_refused(run: Path, tmp_path: Path, capsys):
    other = fake_run(tmp_path / "other", tmp_path / "data", {}, classes=("BLA", "LYT"))
    copy = _swap_checkpoint(run, other, tmp_path)
    err = _refused(["evaluate", str(copy)], copy, capsys)
    assert "classes" in err
    assert not (copy / "evaluation_test.json").exists()
    cell = sorted((tmp_path / "data" / "LYT").glob("*.jpg"))[0]
    _refused(["predict", str(copy), str(cell), "--out", str(tmp_path / "p.csv")], copy, capsys)
    assert not (tmp_path / "p.csv").exists()
    _refused(["export", str(copy)], copy, capsys)
    assert not (copy / "export").exists()


def test_a_checkpoint_trained_on_other_data_is_refused(run: Path, tmp_path: Path, capsys):
    # same classes, same network: only the training data's hash tells the runs apart
    model, _ = load_checkpoint(run, prepare=False)
    card = model_card(["BLA", "LYT", "NGS"], model.hemacnn_arch, manifest_hash="1" * 40)
    other = tmp_path / "other"
    save_checkpoint(other / "checkpoints" / "best.ckpt", model, card)
    copy = _swap_checkpoint(run, other, tmp_path)
    assert "manifest_hash" in _refused(["evaluate", str(copy)], copy, capsys)
    assert not (copy / "evaluation_test.json").exists()


def test_the_run_s_own_checkpoint_still_loads(run: Path):
    _, card = load_checkpoint(run)
    assert card["classes"] == ["BLA", "LYT", "NGS"]
