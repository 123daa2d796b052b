"""One classifier for any MODEL argument: a run folder, a ``.ckpt``, an ensemble folder or an
exported ``.onnx``; an object with ``card``, ``source`` and ``probs(images)``.

A run folder with a fresh ONNX export (:func:`hemacnn.inference.onnxmodel.fresh_export`) predicts
through
ONNX Runtime without importing torch: the same network, fp32, the same probabilities within
1e-4. ``--precision bf16`` and ``--adapt-bn`` need the checkpoint and use it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hemacnn.card import ONNX_SUFFIX
from hemacnn.errors import HemacnnError
from hemacnn.inference.onnxmodel import OnnxClassifier, fresh_export
from hemacnn.inference.runcard import check_run_card
from hemacnn.rundir import find_checkpoint


def load_classifier(path: str | os.PathLike, precision: str = "fp32",
                    adapt_bn: bool = False):  # -> hemacnn.inference.loading.Classifier
    """A classifier for a run folder, a ``.ckpt``, an ensemble folder or an exported ``.onnx``."""
    if Path(path).suffix.lower() == ONNX_SUFFIX:
        if adapt_bn:
            raise HemacnnError(f"--adapt-bn needs the checkpoint: ONNX Runtime folds BatchNorm "
                               f"into the convolutions of {path}; give the run folder instead")
        return OnnxClassifier(path)
    onnx = fresh_export(path) if precision == "fp32" and not adapt_bn else None
    if onnx is not None:
        try:
            clf = OnnxClassifier(onnx)
        except HemacnnError:  # a damaged export: the checkpoint beside it still predicts
            pass
        else:
            if Path(path).is_dir():
                check_run_card(path, clf.card, onnx)
            clf.source = str(find_checkpoint(path))  # the model is the checkpoint; ONNX runs it
            return clf
    # lazy: torch, ~3.5 s of start-up on 2 cores (most of a one-image predict); a run with a
    # fresh ONNX export predicts without it
    from hemacnn.inference.loading import TorchClassifier

    return TorchClassifier(path, precision=precision, adapt_bn=adapt_bn)
