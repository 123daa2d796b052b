"""Commands printed for a user to run are shell-quoted: pasted as they are, a path with spaces
stays one argument."""

from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from factories import image_folder, tiny_config
from hemacnn.cli import main
from hemacnn.data.cache import build_cache
from hemacnn.errors import HemacnnError, Interrupted
from hemacnn.training.resume import StopOnSignal


def _pasted(message: str, command: str) -> list[str]:
    """The words the shell makes of the command quoted in backticks in ``message``."""
    start = message.index(f"`hemacnn {command}")
    return shlex.split(message[start + 1:message.index("`", start + 1)])


def test_train_into_a_used_folder_prints_a_pasteable_resume(tmp_path: Path, capsys):
    data = image_folder(tmp_path / "my data", {"BLA": 2, "LYT": 2})
    run = tmp_path / "my runs" / "first run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: x\n")
    cfg = tiny_config(tmp_path / "tiny.yaml", data, data={"classes": ["BLA", "LYT"]})
    assert main(["train", str(cfg), "--out", str(run)]) == 2
    assert _pasted(capsys.readouterr().err, "train") == ["hemacnn", "train", "--resume",
                                                        str(run)]


def test_stopping_training_prints_a_pasteable_resume(tmp_path: Path):
    run = tmp_path / "my run"
    stop = StopOnSignal(run / "checkpoints" / "last.ckpt")
    stop.signum = 2
    trainer = SimpleNamespace(save_checkpoint=lambda *a, **k: None)
    with pytest.raises(Interrupted) as info:
        stop.on_train_batch_end(trainer, None, None, None, 0)
    assert _pasted(str(info.value), "train") == ["hemacnn", "train", "--resume", str(run)]


def test_nothing_to_cache_prints_a_pasteable_scan(tmp_path: Path):
    root = tmp_path / "cells of today"
    root.mkdir()
    with pytest.raises(HemacnnError) as info:
        build_cache(root, [], 48)
    assert _pasted(str(info.value), "scan") == ["hemacnn", "scan", str(root)]
