"""What a run folder records about where it ran: versions, git commit, seed, hardware."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from hemacnn import __version__


def git_commit(path: Path | None = None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git checkout holding hemacnn's source, if it is one."""
    where = path or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment_info(seed: int, command: str = "") -> dict[str, Any]:
    """Everything needed to say later how a run was made; ``command`` is the command line that
    made it (the caller's: the library never reads argv)."""
    return {
        "hemacnn": __version__,
        "git": git_commit(),
        "seed": seed,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {d: _version(d) for d in ("torch", "torchvision", "lightning", "torchmetrics",
                                              "numpy", "pillow", "scikit-learn")},
        "cuda": torch.cuda.is_available() and torch.cuda.get_device_name(0),
        "cpu_threads": torch.get_num_threads(),
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE"),  # set by the hemacnn command
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
