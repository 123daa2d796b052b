"""Study figures plot epochs as metrics.csv and the training log count them (from 1)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from hemacnn.studies.figures import _epoch_series  # noqa: E402


def test_epoch_series_counts_epochs_as_metrics_csv_does(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "epoch,train_loss,val_loss\n1,1.5,1.4\n2,1.2,1.1\n3,1.0,1.3\n", encoding="utf-8")
    epochs, values = _epoch_series(tmp_path, "val_loss")
    assert epochs == [1.0, 2.0, 3.0]  # the figure's x axis must match the log's "epoch 1/3"
    assert values == [1.4, 1.1, 1.3]
