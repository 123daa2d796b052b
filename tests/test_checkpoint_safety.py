"""issue 7 items 1 and 12: checkpoints load without running code; bad files get one error line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hemacnn.cli import main
from hemacnn.errors import HemacnnError
from hemacnn.inference.checkpoint import read_checkpoint
from hemacnn.training.train import AtomicCheckpointIO


class _Evil:
    """Unpickling this runs a shell command (the attack a shared .ckpt can carry)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _evil_checkpoint(path: Path, target: Path) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": {"card": _Evil(target)}}, path)
    return path


def test_crafted_checkpoint_does_not_run_code(tmp_path, capsys):
    target = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", target)
    img = tmp_path / "cell.jpg"
    img.write_bytes(b"")
    assert main(["predict", str(evil), str(img)]) == 2
    err = capsys.readouterr().err
    assert not target.exists(), "loading the checkpoint ran the code in its pickle"
    assert err.count("\n") == 1 and err.startswith("error: refused to load checkpoint")
    assert "evil.ckpt" in err and "system" in err and "Traceback" not in err
    # evaluate/export/serve go through load_checkpoint; resume through the checkpoint plugin
    with pytest.raises(HemacnnError, match="refused"):
        AtomicCheckpointIO().load_checkpoint(evil)
    assert not target.exists()


@pytest.mark.parametrize("content", [b"some notes\n", b"\xff\xd8\xff\xe0 a jpeg renamed", b""])
def test_unreadable_checkpoint_is_one_error_line(tmp_path, capsys, content):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(content)
    assert main(["predict", str(bad), str(tmp_path / "x.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "model.ckpt" in err
    assert "Traceback" not in err


def test_truncated_checkpoint_is_reported_as_damaged(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, good)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(HemacnnError, match="cut.ckpt: the file is damaged"):
        read_checkpoint(cut)
    assert read_checkpoint(good)["state_dict"]["w"].sum() == 1000


def test_real_checkpoint_loads_with_weights_only(trained_run):
    ckpt = read_checkpoint(trained_run / "checkpoints" / "best.ckpt")
    assert ckpt["hyper_parameters"]["card"]["classes"] == ["BLA", "LYT", "NGS"]
