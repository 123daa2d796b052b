"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or a bad input therefore never leaves a half-written manifest, report or
checkpoint behind: either the old file or the complete new one is there.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hemacnn.errors import HemacnnError


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` (and parents) or raise a one-line error saying it is not writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HemacnnError(
            f"cannot create folder {path}: {exc.strerror or exc}; choose a writable location"
        ) from None
    if not os.access(path, os.W_OK):
        raise HemacnnError(f"folder {path} is not writable; choose a writable location")
    return path


def check_creatable(path: Path) -> None:
    """Fail early, creating nothing, when ``path`` could not be created as a folder later."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise HemacnnError(f"cannot create folder {path}: {existing} is a file; "
                           "choose a writable location")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HemacnnError(f"cannot create folder {path}: {existing} is not writable; "
                           "choose a writable location")


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (threads may be writing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def new_dir_mode() -> int:
    """The mode ``mkdir`` would give a new folder (mkdtemp gives 0700)."""
    return 0o777 & ~_umask()


def _final_mode(path: Path) -> int:
    """The mode the file should end with: the old file's, or what ``open()`` would give a new one.

    mkstemp creates 0600 files; left so, every result would be unreadable to colleagues on a
    shared machine, unlike the checkpoints Lightning writes.
    """
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success rename it over ``path``."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _final_mode(path))
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
