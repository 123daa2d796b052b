"""Fine-tuning from pretrained weights: the trainer's side of ``model.bn_reestimate``.

The BatchNorm arithmetic is in :mod:`hemacnn.models.batchnorm`; this module runs it as a
Lightning callback at the one moment it is right: after the data module is set up and the
initial weights are loaded, before the first optimizer step, and never on a resumed run (its
checkpoint already holds the re-estimated statistics and everything trained since).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from hemacnn.models.batchnorm import BatchNormEstimate, has_folded_batchnorm, reestimate_batchnorm


class BatchNormReestimation(Callback):
    """Re-estimate BatchNorm statistics on training batches before the first step.

    ``mode`` is ``model.bn_reestimate``: True always, ``"auto"`` only when every BatchNorm
    layer looks folded (:func:`has_folded_batchnorm`). The eval-mode function is unchanged
    (the weights and biases absorb the new statistics), so this only decides what train-mode
    BatchNorm starts from. Torch's random state is put back afterwards: the training run then
    draws the same batches, augmentations and dropout masks as one without re-estimation.
    """

    def __init__(self, mode: bool | str, batches: int) -> None:
        self.mode = mode
        self.batches = int(batches)
        self.result: BatchNormEstimate | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0:  # resumed: the checkpoint's statistics are the run's own
            return
        model = pl_module.model
        if self.mode == "auto" and not has_folded_batchnorm(model):
            return
        device = pl_module.device
        rng = torch.get_rng_state()
        loader = trainer.datamodule.train_dataloader()
        batches = (x.to(device).contiguous(memory_format=torch.channels_last)
                   for x, _ in loader)
        try:
            with torch.autocast(device.type, enabled=False):  # statistics in full precision
                self.result = reestimate_batchnorm(model, batches, self.batches)
        finally:
            torch.set_rng_state(rng)
        _say(self.result.summary())


@rank_zero_only
def _say(text: str) -> None:
    print(text, flush=True)


def finetune_callbacks(cfg: Any) -> list[Callback]:
    """The callbacks ``cfg.model`` asks for (none when ``bn_reestimate`` is false)."""
    m = cfg.model
    if m.bn_reestimate is False or (m.bn_reestimate == "auto" and m.freeze_bn):
        return []  # frozen BatchNorm keeps its statistics: the folded ones are exact in eval
    return [BatchNormReestimation(m.bn_reestimate, m.bn_reestimate_batches)]
