"""ONNX export of a trained model (predicting from the file: ``onnxmodel.OnnxClassifier``).

``hemacnn export RUN --format onnx --out DIR`` writes ``DIR/model.onnx`` (dynamic batch size,
input ``image``: float32 NCHW RGB in [0, 1] at the card's input size, output ``logits``) and
``DIR/model_card.json`` beside it (MONAI-bundle style). The card is also stored in the ONNX
file's metadata (``hemacnn_card``), so a copied ``model.onnx`` alone still predicts. The card
records the checkpoint it was made from (name, size, SHA-256; with the run's test figures when
they were measured on it): while that checkpoint is the run's, ``hemacnn predict RUN`` (and
``serve``) run the default export ``RUN/export/model.onnx`` in its place, without importing
torch (:func:`hemacnn.inference.onnxmodel.fresh_export`).

Before the file is written, ONNX Runtime runs it on a probe batch and its probabilities are
compared with fp32 torch's (:func:`check_parity`): a graph that disagrees by more than
:data:`~hemacnn.inference.onnxmodel.PARITY_ATOL` is refused (nothing is written), and the card
records the difference (``onnx.parity``), which :func:`~hemacnn.inference.onnxmodel.fresh_export`
requires before a run predicts through the file.

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
from hemacnn.inference.onnxmodel import (
    EXPORT_DIR,
    PARITY_ATOL,
    SOURCE_KEY,
    OnnxClassifier,
    checkpoint_source,
)
from hemacnn.inference.runcard import check_run_card
from hemacnn.rundir import RunDir, find_checkpoint

FORMATS = ("onnx",)
INPUT, OUTPUT = "image", "logits"
PROBE_IMAGES = 4  # the parity check's batch: random images, a fixed seed


@torch.no_grad()
def check_parity(onnx_path: Path, model: torch.nn.Module, channels: int, size: int
                 ) -> dict[str, float | int]:
    """ONNX Runtime's probabilities against fp32 torch's on a probe batch; a one-line error
    when they differ by more than :data:`PARITY_ATOL` (the file must not stand in for the
    checkpoint), else the record for the card."""
    probe = torch.rand(PROBE_IMAGES, channels, size, size,
                       generator=torch.Generator().manual_seed(0))
    ref = torch.softmax(model.eval().float()(probe).float(), dim=1).numpy()
    got = OnnxClassifier(onnx_path).batch_probs([probe.numpy()])
    diff = float(abs(got - ref).max())
    if not diff <= PARITY_ATOL:  # (NaN too)
        raise HemacnnError(f"ONNX Runtime's probabilities differ from torch's by {diff:.2g} "
                           f"(> {PARITY_ATOL:g}) on a probe batch: not exported; predict "
                           "through the checkpoint")
    return {"max_abs_prob_diff": float(f"{diff:.3g}"), "atol": PARITY_ATOL,
            "images": PROBE_IMAGES}


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
        onnx_info = {"input": INPUT, "output": OUTPUT,
                     "input_layout": "NCHW float32 RGB in [0, 1]",
                     "input_shape": ["batch", channels, size, size],
                     "opset": proto.opset_import[0].version}
        _save_with_card(proto, card, tmp_path)  # the check's session reads the card
        onnx_info["parity"] = check_parity(tmp_path, model, channels, size)
        onnx_card = extend_card(card, metrics=_metrics_of(ckpt),
                                **{SOURCE_KEY: checkpoint_source(ckpt)}, onnx=onnx_info)
        _save_with_card(proto, onnx_card, tmp_path)
        os.replace(tmp_path, onnx_path)
    write_json(card_path, onnx_card)
    return {"onnx": onnx_path, "card": card_path}


def attach_metrics(run_dir: str | os.PathLike) -> bool:
    """Give a run's default export the figures its end-of-training test measured on the same
    checkpoint (an export made before the test has none): in the card beside the file and in
    its metadata. False when the run has no export or the figures are not of its checkpoint."""
    onnx_path = Path(run_dir) / EXPORT_DIR / "model.onnx"
    card_path = onnx_path.parent / RunDir.CARD
    if not (onnx_path.is_file() and card_path.is_file()):
        return False
    card = json.loads(card_path.read_text(encoding="utf-8"))
    ckpt = find_checkpoint(run_dir)
    metrics = _metrics_of(ckpt)
    if metrics is None or (card.get(SOURCE_KEY) or {}).get("file") != ckpt.name:
        return False
    card["metrics"] = metrics
    tmp_path = onnx_path.with_name(".model.onnx.tmp")
    _save_with_card(onnx.load(str(onnx_path)), card, tmp_path)
    os.replace(tmp_path, onnx_path)
    write_json(card_path, card)
    return True


def _save_with_card(proto: onnx.ModelProto, card: dict, path: Path) -> None:
    """Write ``proto`` to ``path`` with ``card`` as its metadata (replacing any card it held)."""
    entries = [e for e in proto.metadata_props if e.key == ONNX_CARD_KEY]
    entry = entries[0] if entries else proto.metadata_props.add()
    entry.key, entry.value = ONNX_CARD_KEY, json.dumps(card)
    onnx.save(proto, str(path))


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
