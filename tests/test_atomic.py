"""hemacnn.atomic: whole files or nothing, with the mode an ordinary new file gets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hemacnn.atomic import write_bytes, write_json, write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    old = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(old)


def test_new_files_get_the_umask_mode_not_private(tmp_path: Path, umask) -> None:
    umask(0o022)
    write_text(tmp_path / "config.yaml", "a: 1\n")
    assert _mode(tmp_path / "config.yaml") == 0o644
    umask(0o027)
    write_json(tmp_path / "metrics.json", {"a": 1})
    write_bytes(tmp_path / "plot.png", b"\x89PNG")
    assert _mode(tmp_path / "metrics.json") == 0o640
    assert _mode(tmp_path / "plot.png") == 0o640


def test_replacing_a_file_keeps_its_mode(tmp_path: Path, umask) -> None:
    umask(0o022)
    target = tmp_path / "report.md"
    target.write_text("old")
    target.chmod(0o600)  # the user made it private on purpose
    write_text(target, "new")
    assert target.read_text() == "new" and _mode(target) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    from hemacnn.atomic import atomic_open

    target = tmp_path / "m.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


def test_cache_folders_are_not_private(tmp_path: Path, umask) -> None:
    import numpy as np
    from PIL import Image

    from hemacnn.data.cache import build_cache
    from hemacnn.data.scan import scan_dataset

    umask(0o022)
    root = tmp_path / "data"
    (root / "AAA").mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(root / "AAA" / "a.png")
    entries = scan_dataset(root, workers=1, progress=False).entries
    cache = build_cache(root, entries, 8, "nearest", progress=False)
    assert _mode(cache.folder) == 0o755
    assert _mode(cache.folder / "images.npy") == 0o644
