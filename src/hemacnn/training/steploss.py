"""Training loss per mini-batch (``trainer.log_step_loss: true``), for the optimizer study (IV-F).

The paper's Figs 11-12 plot the training loss of every mini-batch over one epoch. Lightning's
loggers keep epoch means (and every n-th step), so this callback keeps each step's loss and
writes ``RUN_DIR/step_loss.csv`` (columns step, epoch, batch, loss) atomically at every epoch
end. A resumed run keeps the rows before its checkpoint's step, so the file stays whole.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from hemacnn.atomic import write_text

COLUMNS = ("step", "epoch", "batch", "loss")


def read_step_loss(path: str | Path) -> list[dict[str, float]]:
    """Rows of a step_loss.csv as numbers (empty list when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


class StepLossCSV(Callback):
    """Record the loss returned by every training step (with the L2 term, as Keras reports)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[tuple[int, int, int, float]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # On resume, global_step is the checkpoint's: keep what was logged before it.
        kept = [r for r in read_step_loss(self.path) if r["step"] < trainer.global_step]
        self.rows = [(int(r["step"]), int(r["epoch"]), int(r["batch"]), r["loss"]) for r in kept]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        # global_step has already advanced past this step's optimizer update.
        self.rows.append((trainer.global_step - 1, trainer.current_epoch, batch_idx,
                          float(loss.detach())))

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush()

    @rank_zero_only
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        # Stopped mid-epoch (Ctrl-C saves a checkpoint after a batch): keep the steps so far,
        # whatever stopped it; a resume drops any beyond its checkpoint.
        del exception
        self.flush()

    def flush(self) -> None:
        """Write every row so far (atomically: a kill never leaves a torn file)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for step, epoch, batch, loss in self.rows:
            writer.writerow((step, epoch, batch, f"{loss:.6g}"))
        write_text(self.path, buf.getvalue())
