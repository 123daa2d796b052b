"""Where hemacnn keeps derived files (manifests, preprocessed arrays) for a data folder.

Data folders are often read-only (shared drives, CI), so nothing is written inside them:
caches live under ``$HEMACNN_CACHE``, else ``$XDG_CACHE_HOME/hemacnn``, else ``~/.cache/hemacnn``,
in one sub-folder per data root.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """The top cache folder (not created)."""
    env = os.environ.get("HEMACNN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "hemacnn"


def dataset_cache_dir(root: str | os.PathLike) -> Path:
    """Cache sub-folder for one data root: readable name plus a hash of its absolute path."""
    root = Path(root).resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    return cache_root() / f"{root.name or 'data'}-{digest}"
