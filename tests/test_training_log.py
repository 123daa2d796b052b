"""Training's own log: the bar's epoch count and why training stopped, on a real Trainer."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from hemacnn.training.trainlog import ProgressBar


class _Flat(L.LightningModule):
    """A model whose validation loss never improves: early stopping must end it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, _):
        loss = (self.w - 1).pow(2).sum()
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, _):
        self.log("val_loss", torch.tensor(1.0))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    return DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=2)


def test_early_stopping_is_named_with_the_best_epoch(tmp_path, capsys):
    from lightning.pytorch.callbacks import EarlyStopping

    from hemacnn.training.trainlog import EpochLog

    metrics = tmp_path / "metrics.csv"
    metrics.write_text("epoch,val_loss\n1,1.0\n2,1.0\n3,1.0\n")  # as EpochMetricsCSV leaves it
    trainer = L.Trainer(max_epochs=20, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[EarlyStopping("val_loss", patience=2),
                                   EpochLog(metrics, per_epoch=True)])
    trainer.fit(_Flat(), _loader(), _loader())
    out = capsys.readouterr().out
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("epoch ")] == \
        ["1/20", "2/20", "3/20"]
    assert ("stopped: early stopping at epoch 3 (val_loss did not improve for 2 epochs); "
            "best epoch 1 (val_loss 1.0000)") in out


def test_progress_bar_counts_epochs_from_one():
    bar = ProgressBar()
    trainer = L.Trainer(max_epochs=30, callbacks=[bar], logger=False)
    bar._trainer = trainer
    assert bar._get_train_description(22).startswith("Epoch 23/30")
    assert bar._get_train_description(0).startswith("Epoch 1/30")


def test_model_summary_shows_real_flops():
    from lightning.pytorch.utilities.model_summary import ModelSummary

    from hemacnn.training.train import CellClassifier

    card = {"classes": ["A", "B"], "arch": {"name": "mv3", "num_classes": 2, "input_size": 48,
                                            "options": {"width": 0.125}}}
    module = CellClassifier(card, {"optimizer": {"name": "adam", "lr": 1e-3}})
    assert ModelSummary(module).total_flops > 0


def test_plots_name_the_split_and_mark_the_best_epoch(tmp_path, monkeypatch):
    import hemacnn.evaluation.plots as plots

    seen = []

    def keep(fig, out_png):
        seen.append([t.get_text() for ax in fig.axes for t in
                     [ax.title, *(ax.get_legend().get_texts() if ax.get_legend() else [])]])
        import matplotlib.pyplot as plt

        plt.close(fig)
        return out_png

    monkeypatch.setattr(plots, "_save", keep)
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,train_loss,val_loss,train_acc,val_acc\n"
                        "1,1.0,0.9,0.5,0.5\n2,0.8,0.7,0.6,0.6\n3,0.7,0.75,0.7,0.6\n")
    plots.plot_training_curves(csv_path, tmp_path / "c.png")
    assert "best epoch 2 (best.ckpt)" in seen[-1]
    plots.plot_confusion([[1, 0], [0, 1]], ["A", "B"], tmp_path / "cm.png", split="test")
    assert "Confusion matrix (counts), test split" in seen[-1]
    plots.plot_reliability([{"lo": 0.0, "hi": 1.0, "count": 2, "accuracy": 1.0,
                             "confidence": 0.9}], tmp_path / "r.png", split="val")
    assert any(t.startswith("Reliability diagram, val split") for t in seen[-1])


def test_metrics_csv_is_read_once_for_plots_and_the_training_log(tmp_path):
    import math

    from hemacnn.evaluation.plots import metrics_columns
    from hemacnn.rundir import read_metrics
    from hemacnn.training.trainlog import EpochMetricsCSV, best_epoch_text

    path = tmp_path / "metrics.csv"
    text = ("epoch,train_loss,train_acc,val_loss,val_acc,train_ce,val_ce,lr,time_s\n"
            "1,1.74821,0.473235,1.10923,0.652968,,,0.000490386,153.56\n"
            "2,0.912326,0.672269,0.25078,0.932584,,,1e-05,60.00\n")
    path.write_text(text)
    rows = read_metrics(path)
    assert [r["epoch"] for r in rows] == [1.0, 2.0] and math.isnan(rows[0]["train_ce"])
    assert metrics_columns(path)["val_loss"].tolist() == [1.10923, 0.25078]
    assert best_epoch_text(path) == "; best epoch 2 (val_loss 0.2508)"
    assert best_epoch_text(tmp_path / "absent.csv") == ""
    # A resumed run's callback writes the rows it found exactly as they were written.
    kept = EpochMetricsCSV(path, [])
    assert {e: dict(r) for e, r in kept.rows.items()} == {
        1: {"epoch": "1", "train_loss": "1.74821", "train_acc": "0.473235",
            "val_loss": "1.10923", "val_acc": "0.652968", "lr": "0.000490386",
            "time_s": "153.56"},
        2: {"epoch": "2", "train_loss": "0.912326", "train_acc": "0.672269",
            "val_loss": "0.25078", "val_acc": "0.932584", "lr": "1e-05", "time_s": "60.00"}}
