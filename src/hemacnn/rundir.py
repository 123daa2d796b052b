"""The files of a run folder, named once: every module that reads or writes one goes through here.

Plain paths only (no torch), so light commands can use it without importing the models.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from hemacnn.errors import HemacnnError


@dataclass(frozen=True)
class RunDir:
    """The files of a run folder (``hemacnn train``) or an ensemble folder: named here only."""

    path: Path

    CONFIG = "config.yaml"
    CARD = "model_card.json"
    ENV = "env.json"
    METRICS = "metrics.csv"
    STEP_LOSS = "step_loss.csv"
    TEST_METRICS = "test_metrics.json"
    ENSEMBLE = "ensemble.json"
    BEST, LAST = "best.ckpt", "last.ckpt"
    # The small files behind a run's figures (kilobytes; no checkpoints), as results commit them.
    RAW_FILES = (CONFIG, METRICS, STEP_LOSS, TEST_METRICS, ENV)

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    config = property(lambda self: self.path / self.CONFIG)
    card = property(lambda self: self.path / self.CARD)
    env = property(lambda self: self.path / self.ENV)
    metrics = property(lambda self: self.path / self.METRICS)
    step_loss = property(lambda self: self.path / self.STEP_LOSS)
    test_metrics = property(lambda self: self.path / self.TEST_METRICS)
    ensemble = property(lambda self: self.path / self.ENSEMBLE)
    splits = property(lambda self: self.path / "splits")
    checkpoints = property(lambda self: self.path / "checkpoints")
    plots = property(lambda self: self.path / "plots")
    logs = property(lambda self: self.path / "logs")
    best = property(lambda self: self.checkpoints / self.BEST)
    last = property(lambda self: self.checkpoints / self.LAST)

    def evaluation(self, name: str) -> Path:
        """``evaluation_<name>.json``: what ``hemacnn evaluate`` wrote for split/data ``name``."""
        return self.path / f"evaluation_{name}.json"

    def predictions(self, name: str) -> Path:
        """``predictions_<name>.npz``: labels and probabilities behind ``evaluation(name)``."""
        return self.path / f"predictions_{name}.npz"

    @property
    def finished(self) -> bool:
        """A training run is finished when it wrote its test metrics (its last step)."""
        return self.test_metrics.is_file()

    @property
    def is_ensemble(self) -> bool:
        """Whether this folder is an ensemble (``hemacnn ensemble``) rather than a run."""
        return self.ensemble.is_file()

    def checkpoint(self) -> Path:
        """The checkpoint that predicts: best (lowest validation loss), else last."""
        for ckpt in (self.best, self.last):
            if ckpt.is_file():
                return ckpt
        raise HemacnnError(f"{self.path} has no checkpoints/{self.BEST} or "
                           f"checkpoints/{self.LAST}; give a finished run folder or a .ckpt file")


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file for ``path``: the file itself, a run's best (else last) one, or an
    ensemble folder's ``ensemble.json``."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        return run.ensemble if run.is_ensemble else run.checkpoint()
    if not path.is_file():
        raise HemacnnError(f"checkpoint {path} not found; give a .ckpt file or a run folder")
    return path


def read_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.csv`` (one per epoch, counted from 1), every cell a float:
    an empty (or non-numeric) one is NaN. The one reader of the file, for the plots, the study
    summaries and the training log alike; a one-line error when it cannot be read."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    except OSError as exc:
        raise HemacnnError(f"cannot read {path}: {exc.strerror or exc}; is this a run "
                           "folder that trained at least one epoch?") from None


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except (TypeError, ValueError):  # TypeError: the extra cells of a row longer than the header
        return math.nan
