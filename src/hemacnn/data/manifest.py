"""The manifest: one row per image file found by a scan.

Columns: path (POSIX, relative to the data root), class, sha1, width, height, status, detail.
Everything downstream (splits, cache, training, evaluation) works from manifest entries, so a
scan's verdict on each file is made once and reused.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from hemacnn.atomic import write_text
from hemacnn.errors import HemacnnError

STATUSES = ("ok", "converted", "unusual-size", "duplicate", "suspicious", "unreadable")
"""Every status a scan can give a file, from best to worst."""

USABLE = frozenset({"ok", "converted", "unusual-size"})
"""Statuses whose files may enter the cache and training. ``duplicate`` marks the second and
later copies of the same content (the first copy keeps its own status), so a duplicated image
can never sit in both the training and the test split."""

COLUMNS = ("path", "class", "sha1", "width", "height", "status", "detail")


@dataclass(frozen=True)
class Entry:
    """One image file as the scan saw it."""

    path: str
    label: str
    sha1: str
    width: int
    height: int
    status: str
    detail: str = ""

    @property
    def usable(self) -> bool:
        """True when the file may be used for training and evaluation."""
        return self.status in USABLE


def manifest_to_csv(entries: Iterable[Entry]) -> str:
    """Serialise entries as CSV text (header first)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for e in entries:
        row = asdict(e)
        writer.writerow([row["path"], row["label"], row["sha1"], row["width"], row["height"],
                         row["status"], row["detail"]])
    return buf.getvalue()


def write_manifest(entries: Iterable[Entry], path: str | Path) -> Path:
    """Atomically write the manifest CSV to ``path``."""
    path = Path(path)
    write_text(path, manifest_to_csv(entries))
    return path


def read_manifest(path: str | Path) -> list[Entry]:
    """Read a manifest CSV written by :func:`write_manifest`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HemacnnError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise HemacnnError(
            f"{path} is not a hemacnn manifest (expected columns {','.join(COLUMNS)}); "
            "re-create it with `hemacnn scan`"
        )
    return [
        Entry(r["path"], r["class"], r["sha1"], int(r["width"]), int(r["height"]), r["status"],
              r["detail"])
        for r in reader
    ]


def manifest_hash(entries: Iterable[Entry]) -> str:
    """Content hash of the usable entries (path, class, sha1): the cache and run-folder key."""
    h = hashlib.sha1()
    for e in sorted((e for e in entries if e.usable), key=lambda e: e.path):
        h.update(f"{e.path}\t{e.label}\t{e.sha1}\n".encode())
    return h.hexdigest()
