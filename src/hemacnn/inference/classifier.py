"""One classifier for any MODEL argument: a run folder, a ``.ckpt``, an ensemble folder or an
exported ``.onnx``; an object with ``card``, ``source`` and ``probs(images)``.

The fastest correct path per precision (measured by ``benchmarks/bench_predict.py`` on each CPU
the project runs on; docs/benchmarks.md):

* fp32: ONNX Runtime, when the run has a fresh export that passed its parity check with fp32
  torch (:func:`hemacnn.inference.onnxmodel.fresh_export`: probabilities within 1e-4, else it is
  refused): 1.5-2x PyTorch's eager path on the CPUs measured, near the fp32 matmul peak, and no
  ``import torch``. Else PyTorch (BatchNorm folded, channels-last). A finished training exports
  the run itself when that is cheap (``trainer.export``), so every command finds the export.
* bf16: PyTorch under bf16 autocast (ONNX Runtime's CPU provider has no bf16 convolutions on
  x86). ``--adapt-bn`` needs the checkpoint too.

:func:`numerics` says how a classifier (or a torch model run at a precision) computes its
probabilities: every output that holds probabilities records it beside them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hemacnn.card import ONNX_SUFFIX
from hemacnn.errors import HemacnnError
from hemacnn.inference.onnxmodel import OnnxClassifier, fresh_export
from hemacnn.inference.runcard import check_run_card
from hemacnn.rundir import find_checkpoint


def load_classifier(path: str | os.PathLike, precision: str = "fp32",
                    adapt_bn: bool = False):  # -> hemacnn.inference.loading.Classifier
    """A classifier for a run folder, a ``.ckpt``, an ensemble folder or an exported ``.onnx``."""
    if Path(path).suffix.lower() == ONNX_SUFFIX:
        if precision == "bf16":
            raise HemacnnError(f"--precision bf16 needs the checkpoint: ONNX Runtime runs {path} "
                               "in fp32; give the run folder instead")
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


@dataclass(frozen=True)
class Numerics:
    """How probabilities were computed: what every output records beside them."""

    precision: str  # fp32 or bf16: what ran (``auto`` resolved)
    backend: str  # torch or onnxruntime
    backend_version: str
    device: str  # cpu, cuda:0, ...

    def as_dict(self) -> dict[str, str]:
        """The fields, for JSON files, CSV columns and API answers."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.precision} · {self.backend} {self.backend_version} · {self.device}"


def numerics(model: Any, precision: str = "fp32") -> Numerics:
    """How ``model`` computes probabilities: a classifier from :func:`load_classifier`, or a
    torch module run by :func:`hemacnn.inference.engine.predict_batches` at ``precision``."""
    if isinstance(model, OnnxClassifier):
        import onnxruntime as ort  # lazy: ~190 ms, ONNX only; the classifier imported it already

        cuda = model.session.get_providers()[0] == "CUDAExecutionProvider"
        return Numerics("fp32", "onnxruntime", ort.__version__, "cuda:0" if cuda else "cpu")
    # lazy: torch, ~3.5 s of start-up on 2 cores; a torch model or classifier has imported it
    # already, and the ONNX path above never does
    import torch

    # lazy: as torch (these modules import it)
    from hemacnn.inference.engine import resolve_precision
    from hemacnn.inference.loading import TorchClassifier

    if isinstance(model, TorchClassifier):
        model, precision = model.model, model.precision
    device = next(model.parameters()).device
    return Numerics(resolve_precision(precision, device), "torch", torch.__version__,
                    str(device))
