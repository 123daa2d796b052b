"""What lets a stopped training run continue exactly where it stopped.

* :class:`AtomicCheckpointIO`: checkpoints written whole or not at all, read safely.
* :class:`RandomStateInCheckpoint`: the random-number state travels with every checkpoint.
* :class:`StopOnSignal`: Ctrl-C or SIGTERM stops after a mini-batch with a resumable checkpoint.

(The data order is seeded per epoch by the samplers, and a mid-epoch position is restored by
:class:`hemacnn.data.datamodule.ResumableLoader`.)
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hemacnn.errors import Interrupted, command_line
from hemacnn.inference.checkpoint import read_checkpoint

RNG_KEY = "hemacnn_rng"  # the checkpoint entry of the random state (runs saved before read it)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temp file and rename, so kill -9 never leaves a torn last.ckpt.

    Lightning's own save (``lightning.fabric.utilities.cloud_io._atomic_save``, 2.6) goes through
    an fsspec transaction whose local temp file is made by ``tempfile.mkstemp()`` in the
    system's temp folder, then moved: where that folder is another filesystem (a tmpfs /tmp, a
    run folder on a shared drive) the move is a copy, and a kill during it leaves a torn file.
    The temp file here sits beside the checkpoint, so the rename is atomic.

    Loading (resume) goes through :func:`hemacnn.inference.checkpoint.read_checkpoint`
    (weights only).
    """

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Any, map_location: Any = None,
                        weights_only: bool | None = None) -> dict:
        # Resume reads the file the same safe way as predict: tensors and plain data only, onto
        # the CPU (Lightning moves the state where it belongs), whatever Lightning asks for.
        del map_location, weights_only
        return read_checkpoint(path)


class StopOnSignal(Callback):
    """Ctrl-C or SIGTERM stops training after the current mini-batch, with a resumable last.ckpt.

    Python's default Ctrl-C raises KeyboardInterrupt wherever the program is (possibly inside an
    optimizer step), so no checkpoint could be trusted and the resume lost up to an epoch. This
    callback only notes the signal; at the end of the mini-batch it saves last.ckpt (the same
    state as the time-based mid-epoch checkpoints, so the resume continues at the next batch)
    and stops. A second Ctrl-C stops at once, as before. Installed in the main thread of a
    single-process run only (DDP ranks keep Lightning's own handling).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1 or threading.current_thread() is not threading.main_thread():
            return
        self.signum = None
        for sig in self.SIGNALS:
            old = signal.getsignal(sig)
            if old is not signal.SIG_IGN:  # a job started with nohup or & keeps ignoring SIGINT
                self._old[sig] = old
                signal.signal(sig, self._note)

    def _note(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:  # the second signal: stop at once
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this mini-batch and saving a "
              "checkpoint (Ctrl-C again stops at once)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        """Put back the handlers found at fit start (train() calls it after fit, as Lightning's
        own teardown re-installs the handlers it found, ours among them)."""
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.signum is not None:
            trainer.save_checkpoint(self.path, weights_only=False)
            raise Interrupted("training stopped by "
                              f"{signal.Signals(self.signum).name} after a mini-batch; "
                              "continue it with "
                              f"`{command_line('train', '--resume', self.path.parents[1])}`")


class RandomStateInCheckpoint(Callback):
    """Random-number state travels with the checkpoint, so a resumed run draws the same noise
    and dropout masks as one that was never stopped."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # Plain lists and tensors only: checkpoints must load with torch.load(weights_only=True).
        kind, key, pos, has_gauss, gauss = np.random.get_state()
        checkpoint[RNG_KEY] = {
            "torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, key.tolist(), int(pos), int(has_gauss), float(gauss)],
        }
        if torch.cuda.is_available():
            checkpoint[RNG_KEY]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get(RNG_KEY)
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        kind, key, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
