"""The memory-mapped image cache: every usable image preprocessed once.

:func:`build_cache` runs :func:`hemacnn.data.images.preprocess_image` (the one deterministic
preprocessing shared by training, evaluation and prediction) once per usable image, in
parallel processes that write their rows straight into a ``.npy`` file opened as a memory map,
so even the full dataset at 128 px (~8.4 GB) never has to fit in RAM. JPEG draft mode, which
the cache key records, is explained at :data:`hemacnn.data.images.DRAFT_BY_DEFAULT`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from hemacnn.atomic import ensure_writable_dir, new_dir_mode
from hemacnn.data.images import DRAFT_BY_DEFAULT, check_resize, preprocess_image
from hemacnn.data.manifest import Entry, manifest_hash
from hemacnn.data.parallel import default_workers, file_lock, run_chunks
from hemacnn.data.paths import dataset_cache_dir
from hemacnn.errors import HemacnnError, command_line

FORMAT_VERSION = 1
"""Bump when the cache layout or the preprocessing changes: it is part of the cache key."""

CHUNK = 64
"""Images per worker task: large enough to hide the task overhead, small for a smooth bar."""


def cache_key(entries: Iterable[Entry], size: int, method: str,
              draft: bool | None = None) -> str:
    """Key of the cache for these entries, size and method (changes iff any of them does)."""
    use_draft = DRAFT_BY_DEFAULT[method] if draft is None else draft
    spec = f"{manifest_hash(entries)}|{int(size)}|{method}|draft={use_draft}|v{FORMAT_VERSION}"
    return hashlib.sha1(spec.encode()).hexdigest()[:16]


class ImageCache:
    """A finished cache: a read-only memory map of N x size x size x 3 uint8 plus its index."""

    def __init__(self, folder: str | Path, built: bool = False) -> None:
        self.folder = Path(folder)
        self.built = built
        """True when this call decoded the images, False when an existing cache was reused."""
        try:
            meta = json.loads((self.folder / "index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise HemacnnError(f"image cache {self.folder} is damaged ({exc}); delete that "
                               "folder and it will be rebuilt") from None
        self.paths: list[str] = meta["paths"]
        self.size: int = int(meta["size"])
        self.method: str = meta["method"]
        self.key: str = meta["key"]
        self._row = {p: i for i, p in enumerate(self.paths)}
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        """The memory-mapped uint8 array, opened lazily (and again in each worker process)."""
        if self._array is None:
            self._array = np.load(self.folder / "images.npy", mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict:
        # Pickling a memmap copies its data; DataLoader workers reopen the file instead.
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    def __len__(self) -> int:
        return len(self.paths)

    def __contains__(self, path: str) -> bool:
        return path in self._row

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        """Row numbers of ``paths`` (POSIX, relative to the data root)."""
        try:
            return np.fromiter((self._row[p] for p in paths), dtype=np.int64, count=len(paths))
        except KeyError as exc:
            raise HemacnnError(f"{exc.args[0]} is not in the image cache {self.folder}; "
                               "it failed validation or was added after the scan; rescan"
                               ) from None

    def get(self, i: int) -> np.ndarray:
        """Image ``i`` as a uint8 (size, size, 3) array."""
        return np.asarray(self.array[i])


def _fill(npy: str, task: tuple[int, list[str]], size: int, method: str,
          draft: bool | None) -> int:
    """Worker task: preprocess a chunk (start row, files) into the memmap at ``npy``."""
    start, files = task
    out = np.load(npy, mmap_mode="r+")
    for j, f in enumerate(files):
        out[start + j] = preprocess_image(f, size, method, draft)
    out.flush()
    del out
    return len(files)


def build_cache(root: str | os.PathLike, entries: Iterable[Entry], size: int,
                method: str = "nearest", workers: int | None = None, progress: bool = True,
                draft: bool | None = None) -> ImageCache:
    """Return the cache of the usable ``entries`` at ``size``/``method``, building it if absent."""
    check_resize(size, method)
    root = Path(root)
    usable = sorted((e for e in entries if e.usable), key=lambda e: e.path)
    if not usable:
        raise HemacnnError(f"no usable images to cache under {root}; run "
                           f"`{command_line('scan', root)}` to see what is wrong with them")
    key = cache_key(usable, size, method, draft)
    parent = dataset_cache_dir(root)
    final = parent / f"cache-{key}"
    if (final / "index.json").is_file():
        return ImageCache(final, built=False)
    ensure_writable_dir(parent)
    # One builder at a time per key (e.g. DDP ranks or two runs started together): the others
    # wait on the lock, then find the finished cache and reuse it.
    with file_lock(parent / f".cache-{key}.lock"):
        if (final / "index.json").is_file():
            return ImageCache(final, built=False)
        _remove_orphans(parent)
        return _build(root, usable, final, key, size, method, draft, workers, progress)


def _build(root: Path, usable: list[Entry], final: Path, key: str, size: int, method: str,
           draft: bool | None, workers: int | None, progress: bool) -> ImageCache:
    """Decode into a private temp folder, then rename it to ``final`` in one step."""
    # A folder named cache-<key> is therefore always complete; an interrupted build leaves only
    # a .tmp-* folder that is ignored (and removed by the next build once its process is gone).
    parent = final.parent
    tmp = Path(tempfile.mkdtemp(prefix=f"{_tmp_prefix()}{key}-", dir=parent))
    os.chmod(tmp, new_dir_mode())  # a shared $HEMACNN_CACHE must stay readable to colleagues
    try:
        npy = tmp / "images.npy"
        arr = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8,
                                        shape=(len(usable), size, size, 3))
        del arr
        files = [str(root / e.path) for e in usable]
        _run_fill(str(npy), files, size, method, draft, workers, progress)
        meta = {"key": key, "size": int(size), "method": method, "format": FORMAT_VERSION,
                "manifest_hash": manifest_hash(usable), "root": str(root.resolve()),
                "draft": DRAFT_BY_DEFAULT[method] if draft is None else draft,
                "paths": [e.path for e in usable]}
        (tmp / "index.json").write_text(json.dumps(meta), encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "index.json").is_file():
                raise
            # Someone without the lock (another host, no flock) finished first: use theirs.
            shutil.rmtree(tmp, ignore_errors=True)
            return ImageCache(final, built=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImageCache(final, built=True)


def _tmp_prefix(pid: int | None = None) -> str:
    return f".tmp-cache-{socket.gethostname()}-{pid or os.getpid()}-"


def _remove_orphans(parent: Path) -> None:
    """Delete temp folders of builds killed on this host (their process no longer exists)."""
    host = f".tmp-cache-{socket.gethostname()}-"
    for tmp in parent.glob(f"{host}*"):
        pid_text = tmp.name[len(host):].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, owned by another user


def _run_fill(npy: str, files: list[str], size: int, method: str, draft: bool | None,
              workers: int | None, progress: bool) -> None:
    n = len(files)
    chunks = [(i, files[i:i + CHUNK]) for i in range(0, n, CHUNK)]
    job = functools.partial(_fill, npy, size=size, method=method, draft=draft)
    for _ in run_chunks(job, chunks, workers or default_workers(),
                        label=f"caching {n} images at {size} px ({method})", total=n,
                        progress=progress, count=int):
        pass

