"""ONNX export of a trained model, and prediction from the exported file with ONNX Runtime.

``hemacnn export RUN --format onnx --out DIR`` writes ``DIR/model.onnx`` (dynamic batch size,
input ``image``: float32 NCHW RGB in [0, 1] at the card's input size, output ``logits``) and
``DIR/model_card.json`` beside it (MONAI-bundle style). The card is also stored in the ONNX
file's metadata (``hemacnn_card``), so a copied ``model.onnx`` alone still predicts.

The exported graph is the trained model as it is (BatchNorm not folded, fp32): ONNX Runtime
folds and fuses on its own when it loads the file, and fp32 keeps the parity test meaningful.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.atomic import ensure_writable_dir, write_json
from hemacnn.errors import HemacnnError

FORMATS = ("onnx",)
INPUT, OUTPUT = "image", "logits"
CARD_KEY = "hemacnn_card"


def export_model(model_path: str | os.PathLike, out: str | os.PathLike | None = None,
                 fmt: str = "onnx") -> dict[str, Path]:
    """Export a run folder or ``.ckpt`` to ``out`` (default: RUN/export); return written paths."""
    import onnx
    import torch

    from hemacnn.predict import find_checkpoint, load_checkpoint

    if fmt not in FORMATS:
        raise HemacnnError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    ckpt = find_checkpoint(model_path)
    model, card = load_checkpoint(ckpt, device="cpu", prepare=False)
    if out is None:
        run = Path(model_path) if Path(model_path).is_dir() else ckpt.parent.parent
        out = run / "export"
    out = ensure_writable_dir(Path(out))
    size, channels = int(card["input_size"]), int(card["arch"]["options"].get("in_channels", 3))
    example = (torch.rand(2, channels, size, size),)
    onnx_path, card_path = out / "model.onnx", out / "model_card.json"
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():  # the exporter's own notices are not the user's concern
            warnings.simplefilter("ignore")
            torch.onnx.export(model, example, str(tmp_path), input_names=[INPUT],
                              output_names=[OUTPUT],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                              dynamo=True, external_data=False, verbose=False)
        proto = onnx.load(str(tmp_path))
        onnx_card = {**card, "onnx": {"input": INPUT, "output": OUTPUT,
                                      "input_layout": "NCHW float32 RGB in [0, 1]",
                                      "input_shape": ["batch", channels, size, size],
                                      "opset": proto.opset_import[0].version}}
        entry = proto.metadata_props.add()
        entry.key, entry.value = CARD_KEY, json.dumps(onnx_card)
        onnx.save(proto, str(tmp_path))
        os.replace(tmp_path, onnx_path)
    write_json(card_path, onnx_card)
    return {"onnx": onnx_path, "card": card_path}


def onnx_card(path: Path, session: Any) -> dict[str, Any]:
    """The model card stored in an ONNX file's metadata, else ``model_card.json`` beside it."""
    from hemacnn.predict import check_card

    meta = session.get_modelmeta().custom_metadata_map
    if CARD_KEY in meta:
        return check_card(json.loads(meta[CARD_KEY]), path)
    beside = path.parent / "model_card.json"
    if beside.is_file():
        return check_card(json.loads(beside.read_text(encoding="utf-8")), path)
    raise HemacnnError(f"{path} carries no hemacnn model card (no metadata and no "
                       "model_card.json beside it); export it with `hemacnn export`")


class OnnxClassifier:
    """An exported model run by ONNX Runtime: ``probs(images)`` for uint8 NHWC arrays."""

    def __init__(self, path: str | os.PathLike):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise HemacnnError(f"ONNX model {path} not found; export one with "
                               "`hemacnn export RUN --format onnx`")
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own error types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise HemacnnError(f"cannot load ONNX model {path}: {first[:200]}") from None
        self.card, self.source = onnx_card(path, self.session), str(path)
        self.input = self.session.get_inputs()[0].name

    def probs(self, images: np.ndarray, batch_size: int = 64, tta: bool = False) -> np.ndarray:
        """Softmax probabilities (N, C), fp32, optionally averaged over the 8 dihedral views."""
        ks = range(8) if tta else [0]
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].astype(np.float32).transpose(0, 3, 1, 2) / 255
            total = 0.0
            for k in ks:
                xk = np.rot90(x, k % 4, axes=(2, 3))
                xk = np.ascontiguousarray(xk[..., ::-1] if k >= 4 else xk)
                logits = self.session.run(None, {self.input: xk})[0].astype(np.float64)
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                total = total + e / e.sum(axis=1, keepdims=True)
            out.append((total / len(ks)).astype(np.float32))
        if not out:
            return np.zeros((0, len(self.card["classes"])), dtype=np.float32)
        return np.concatenate(out)
