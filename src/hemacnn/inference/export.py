"""ONNX export of a trained model (predicting from the file: ``onnxmodel.OnnxClassifier``).

``hemacnn export RUN --format onnx --out DIR`` writes ``DIR/model.onnx`` (dynamic batch size,
input ``image``: float32 NCHW RGB in [0, 1] at the card's input size, output ``logits``) and
``DIR/model_card.json`` beside it (MONAI-bundle style). The card is also stored in the ONNX
file's metadata (``hemacnn_card``), so a copied ``model.onnx`` alone still predicts. The card
records the checkpoint it was made from (name, size, SHA-256; with the run's test figures when
they were measured on it): while that checkpoint is the run's, ``hemacnn predict RUN`` (and
``serve``) run the default export ``RUN/export/model.onnx`` in its place, without importing
torch (:func:`hemacnn.inference.onnxmodel.fresh_export`).

The exported graph is the trained model as it is (BatchNorm not folded, fp32): ONNX Runtime
folds and fuses on its own when it loads the file, and fp32 keeps the parity test meaningful.

Stain normalisation (``data.stain_norm``) is not inside the graph: torchstain normalises each
image with masked in-place operations that do not export. The card (in the metadata and beside
the file) carries the reference, and ``OnnxClassifier`` applies it before the session; another
runtime must apply it too (or use a model trained without it). Test-time BatchNorm adaptation
needs the checkpoint (ONNX Runtime folds BatchNorm away).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from hemacnn.atomic import ensure_writable_dir, write_json
from hemacnn.card import ONNX_CARD_KEY, extend_card, read_card
from hemacnn.errors import HemacnnError
from hemacnn.inference.loading import load_checkpoint
from hemacnn.inference.onnxmodel import EXPORT_DIR, SOURCE_KEY, checkpoint_source
from hemacnn.inference.runcard import check_run_card
from hemacnn.rundir import RunDir, find_checkpoint

FORMATS = ("onnx",)
INPUT, OUTPUT = "image", "logits"


def export_model(model_path: str | os.PathLike, out: str | os.PathLike | None = None,
                 fmt: str = "onnx") -> dict[str, Path]:
    """Export a run folder or ``.ckpt`` to ``out`` (default: RUN/export); return written paths."""
    if fmt not in FORMATS:
        raise HemacnnError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    ckpt = find_checkpoint(model_path)
    model, card = load_checkpoint(ckpt, device="cpu", prepare=False)
    if Path(model_path).is_dir():  # loaded by file (to export it unprepared): check it here
        check_run_card(model_path, card, ckpt)
    if out is None:
        run = Path(model_path) if Path(model_path).is_dir() else ckpt.parent.parent
        out = run / EXPORT_DIR
    out = ensure_writable_dir(Path(out))
    size, channels = int(card["input_size"]), int(card["arch"]["options"].get("in_channels", 3))
    example = (torch.rand(2, channels, size, size),)
    onnx_path, card_path = out / "model.onnx", out / RunDir.CARD
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():  # the exporter's own notices are not the user's concern
            warnings.simplefilter("ignore")
            torch.onnx.export(model, example, str(tmp_path), input_names=[INPUT],
                              output_names=[OUTPUT],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                              dynamo=True, external_data=False, verbose=False)
        proto = onnx.load(str(tmp_path))
        # The checkpoint this file was made from: `predict RUN` runs a fresh export in its
        # place (hemacnn.inference.onnxmodel.fresh_export).
        onnx_card = extend_card(
            card, metrics=_metrics_of(ckpt), **{SOURCE_KEY: checkpoint_source(ckpt)},
            onnx={"input": INPUT, "output": OUTPUT, "input_layout": "NCHW float32 RGB in [0, 1]",
                  "input_shape": ["batch", channels, size, size],
                  "opset": proto.opset_import[0].version})
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_CARD_KEY, json.dumps(onnx_card)
        onnx.save(proto, str(tmp_path))
        os.replace(tmp_path, onnx_path)
    write_json(card_path, onnx_card)
    return {"onnx": onnx_path, "card": card_path}


def _metrics_of(ckpt: Path) -> dict | None:
    """The run's metrics of record when they were measured on ``ckpt`` (a checkpoint's own card
    is saved before the run's test; the run folder's card gets them after it)."""
    run = ckpt.parent.parent
    if ckpt.parent != RunDir(run).checkpoints or not RunDir(run).card.is_file():
        return None
    try:
        metrics = read_card(run).get("metrics")
    except HemacnnError:
        return None
    return metrics if metrics and metrics.get("checkpoint") == ckpt.name else None
