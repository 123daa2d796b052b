"""What training tells the user and keeps on disk besides the checkpoints.

* :class:`EpochLog`: one plain line per epoch for logs and CI (where no progress bar draws), and
  one line at the end saying why training stopped and which epoch was best.
* :class:`EpochMetricsCSV`: ``metrics.csv``, one row per epoch, whole across resumes.
* :class:`ProgressBar`: Lightning's rich bar, counting epochs from 1 as everything else does.
* :class:`KeepingCSVLogger`: Lightning's CSV logger, except that a resumed run keeps the rows
  logged before the interruption (Lightning's own deletes the file and starts again).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from hemacnn.atomic import write_text
from hemacnn.errors import HemacnnError
from hemacnn.rundir import read_metrics

LIGHTNING_NOTICES = logging.getLogger("lightning.pytorch.utilities.rank_zero")


def _lightning_notice_kept(record: logging.LogRecord) -> bool:
    """Lightning's info lines that say nothing our own output does not say better."""
    text = record.getMessage()
    # A cloud-logger advert: our users cannot reach it from a lab machine.
    if "litlogger" in text:
        return False
    # "`Trainer.fit` stopped: `max_epochs=30` reached." EpochLog's last line says why training
    # stopped, with the best epoch. (A stop for want of training batches is kept: it is news.)
    return not text.startswith(("`Trainer.fit` stopped: `max_epochs",
                                "`Trainer.fit` stopped: `max_steps"))


LIGHTNING_NOTICES.addFilter(_lightning_notice_kept)

# "GPU available: False, used: False", "TPU available: …", "HPU available: …": printed when the
# Trainer is built, hidden unless `train --verbose` (the run's env.json records the device).
_DEVICE_NOTICES = ("GPU available:", "TPU available:", "HPU available:", "IPU available:")


def _no_device_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_DEVICE_NOTICES)


@contextlib.contextmanager
def device_notices_hidden(hide: bool = True) -> Iterator[None]:
    """Lightning's device lines left out while a Trainer is built (``hide``)."""
    if hide:
        LIGHTNING_NOTICES.addFilter(_no_device_notice)
    try:
        yield
    finally:
        LIGHTNING_NOTICES.removeFilter(_no_device_notice)


# A Lightning-internal notice that a user can do nothing about.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def _fmt(metrics: dict[str, Any], key: str, digits: int) -> str:
    return f"{key} {float(metrics[key]):.{digits}f}" if key in metrics else ""


class EpochLog(Callback):
    """Prints ``epoch N/M  train_loss … val_acc …  S s`` per epoch and the reason training ended.

    With ``per_epoch`` (no progress bar), also a line inside the epoch at most
    ``progress_seconds`` apart: ``epoch N/M  step i/n  loss …  X img/s  ETA m:ss``, so a log
    of a long epoch shows it is alive and when it will end.
    ``metrics_csv`` is the run's per-epoch file (whole across resumes): the best epoch is read
    from it, the way the best checkpoint was chosen (lowest validation loss, first on ties).
    """

    def __init__(self, metrics_csv: Path, per_epoch: bool = True,
                 progress_seconds: float = 60.0) -> None:
        self.metrics_csv = Path(metrics_csv)
        self.per_epoch = per_epoch
        self.progress_seconds = progress_seconds
        self._t0 = self._t_line = time.monotonic()
        self._steps = self._images = self._loss_steps = 0
        self._loss_sum: Any = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._t_line = time.monotonic()
        self._steps = self._images = self._loss_steps = 0
        self._loss_sum = 0.0

    @rank_zero_only
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.per_epoch:
            return
        self._steps += 1
        self._images += len(batch[0]) if isinstance(batch, (list, tuple)) else 0
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:  # summed as a tensor: no device sync on the steps not printed
            self._loss_sum = self._loss_sum + loss.detach()
            self._loss_steps += 1
        now = time.monotonic()
        if now - self._t_line < self.progress_seconds:
            return
        self._t_line = now
        elapsed = max(now - self._t0, 1e-9)
        total = trainer.num_training_batches
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
                 f"step {batch_idx + 1}/{total if math.isfinite(total) else '?'}"]
        if self._loss_steps:
            parts.append(f"loss {float(self._loss_sum) / self._loss_steps:.4f}")
        parts.append(f"{self._images / elapsed:.1f} img/s")
        if math.isfinite(total):
            left = (total - batch_idx - 1) * elapsed / self._steps
            parts.append(f"ETA {int(left) // 60}:{int(left) % 60:02d}")
        self._loss_sum, self._loss_steps = 0.0, 0  # the next line's loss: the steps since this
        print("  ".join(parts), flush=True)

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.per_epoch or trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
                 _fmt(m, "train_loss", 4), _fmt(m, "train_acc", 4),
                 _fmt(m, "val_loss", 4), _fmt(m, "val_acc", 4),
                 f"{time.monotonic() - self._t0:.1f} s"]
        print("  ".join(p for p in parts if p), flush=True)

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        print(f"stopped: {stop_reason(trainer)}{best_epoch_text(self.metrics_csv)}", flush=True)


class EpochMetricsCSV(Callback):
    """One row per finished epoch in RUN_DIR/metrics.csv, rewritten atomically each epoch.

    Epochs are counted from 1, as the console and the README count them (Lightning counts from
    0). Rows already there (from before an interruption) are kept, so a resumed run's file is
    whole.
    """

    def __init__(self, path: Path, classes: list[str]):
        self.path = path
        self.columns = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                        "train_ce", "val_ce"]
        self.columns += [f"val_{m}_{c}" for c in classes for m in ("precision", "recall")]
        self.columns += ["lr", "time_s"]
        self.rows: dict[int, dict[str, Any]] = {}
        self._t0 = time.monotonic()
        if path.exists():
            # Written again as they were (formatting a written number again gives the same
            # text); a NaN cell is written empty, as a value never logged is.
            self.rows = {int(r["epoch"]): {k: _cell(k, v) for k, v in r.items() if v == v}
                         for r in read_metrics(path)}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.monotonic()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        epoch = trainer.current_epoch + 1
        row: dict[str, Any] = {"epoch": epoch}
        for col in self.columns[1:]:
            if col in m:
                row[col] = _cell(col, float(m[col]))
        row["lr"] = _cell("lr", trainer.optimizers[0].param_groups[0]["lr"])
        row["time_s"] = _cell("time_s", time.monotonic() - self._t0)
        # A resume replays the epoch it stopped in: drop that row and any later one.
        self.rows = {e: r for e, r in self.rows.items() if e < epoch}
        self.rows[epoch] = row
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        for epoch in sorted(self.rows):
            writer.writerow(self.rows[epoch])
        write_text(self.path, buf.getvalue())


def _cell(column: str, value: float) -> str:
    """A metrics.csv cell: the epoch whole, time_s to 0.01 s, every other value to 6 digits."""
    if column == "epoch":
        return str(int(value))
    return f"{value:.2f}" if column == "time_s" else f"{value:.6g}"


class ProgressBar(RichProgressBar):
    """Lightning's rich bar without ``v_num`` (our loggers' version names are folder names)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        # Lightning counts from 0 ("Epoch 22/29"); people, our logs and metrics plots from 1.
        # A private method, as the bar has no public hook for its text; test_training_log
        # fails if a Lightning release renames it.
        text = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None:
            text += f"/{self.trainer.max_epochs}"
        return f"{text:{len(self.validation_description)}}"


def stop_reason(trainer: L.Trainer) -> str:
    """Why ``trainer.fit`` returned: early stopping (at which epoch, after what) or max_epochs."""
    es = trainer.early_stopping_callback
    if es is not None and es.stopped_epoch > 0:
        return (f"early stopping at epoch {es.stopped_epoch + 1} ({es.monitor} did not improve "
                f"for {es.patience} epochs)")
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return f"reached max_epochs ({trainer.max_epochs})"
    return f"stopped by Lightning after epoch {trainer.current_epoch}"


def best_epoch_text(metrics_csv: Path) -> str:
    """'; best epoch M (val_loss X)' from the per-epoch file, or '' when it has no val_loss."""
    try:
        rows = read_metrics(metrics_csv)
    except HemacnnError:
        return ""
    rows = [r for r in rows if not math.isnan(r.get("val_loss", math.nan))]
    if not rows:
        return ""
    best = min(rows, key=lambda r: r["val_loss"])  # min keeps the first of equals
    return f"; best epoch {int(best['epoch'])} (val_loss {best['val_loss']:.4f})"


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer that keeps an existing file's rows from before the resume point."""

    def _check_log_dir_exists(self) -> None:
        # A private method: Lightning's writer has no public way to keep the rows of a run it
        # resumes, and deleting them at construction (before the first save) would lose them
        # for good when a resumed run is stopped again early. test_train's resume test of the
        # CSV log fails if a Lightning release changes it. Lightning deletes metrics.csv here;
        # keep its rows instead: the first save drops those at or after the first step logged
        # now (logged after the checkpoint we resumed from).
        self._previous: list[dict[str, str]] | None = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self._previous = list(csv.DictReader(fh))

    def save(self) -> None:
        """Write the recorded rows; on the first save of a resumed run, the kept rows first."""
        if self._previous is None or not self.metrics:
            super().save()
            return
        first = min(int(m["step"]) for m in self.metrics)
        kept = [r for r in self._previous if r.get("step") and int(float(r["step"])) < first]
        self._previous = None
        self.metrics = kept + self.metrics
        self._record_new_keys()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.metrics_keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.metrics)
        write_text(self.metrics_file_path, buf.getvalue())
        self.metrics = []


class KeepingCSVLogger(CSVLogger):
    """CSVLogger whose ``metrics.csv`` survives a resume whole (see :class:`_KeepingWriter`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _KeepingWriter:
        """The writer, created on first use (rank zero only, as Lightning's)."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment
