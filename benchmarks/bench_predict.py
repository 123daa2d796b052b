"""Prediction throughput: the forward pass as `evaluate`/`predict` run it, in img/s.

Run by hand (never inside tests):
    python benchmarks/bench_predict.py --sample ../shared/data/bm_sample/BM_cytomorphology_data
    python benchmarks/bench_predict.py --checkpoint runs/quick-X --sample ...  # + agreement

Cases, each on the same real images (the sample's cells preprocessed at the input size),
batch 64, forward + softmax only (decoding is timed separately, once):

* ``before``: what `evaluate` did before the fast path: fp32, channels-first, BatchNorm unfused.
* ``fp32``: BatchNorm folded into the convs, channels-last, fp32.
* ``bf16``: the same in bf16 autocast (the default on CPUs with native bf16).
* ``onnxruntime``: the exported ONNX file run by ONNX Runtime (fp32, its own fusions).

Model: the quick config's MV3 (quarter width) at 64 and 128 px, untrained unless
``--checkpoint`` is given (speed does not depend on the weights). With a checkpoint the bf16
and ONNX classes are also compared with fp32 on every image.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hemacnn.data.cache import preprocess_image
from hemacnn.export import export_model
from hemacnn.inference import prepare_model
from hemacnn.loading import OnnxClassifier, load_checkpoint, predict_arrays
from hemacnn.models import build_model


def _images(sample: Path, size: int, limit: int) -> np.ndarray:
    files = sorted(sample.rglob("*.jpg"))[:limit]
    t0 = time.perf_counter()
    images = np.stack([preprocess_image(f, size) for f in files])
    dt = time.perf_counter() - t0
    print(f"decoded {len(files)} images at {size} px: {len(files) / dt:,.0f} img/s", flush=True)
    return images


def _rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks its kernels on the first call
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


@torch.no_grad()
def _before(model: torch.nn.Module, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """The forward pass as it was: fp32, channels-first, the unfused trained module."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2).float() / 255
        out.append(torch.softmax(model(x.contiguous()), dim=1).numpy())
    return np.concatenate(out)


def _checkpoint_for(model: torch.nn.Module, size: int, folder: Path) -> Path:
    card = {"format": "hemacnn-card/1", "classes": [f"C{i}" for i in range(8)],
            "class_names": [f"class {i}" for i in range(8)], "input_size": size,
            "resize_method": "nearest", "arch": model.hemacnn_arch}
    path = folder / f"mv3-{size}.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in model.state_dict().items()},
                "hyper_parameters": {"card": card}}, path)
    return path


def bench(size: int, images: np.ndarray, ckpt: Path | None, repeats: int) -> dict:
    """img/s of each case at one input size (and agreement with fp32 when trained)."""
    with tempfile.TemporaryDirectory() as tmp:
        if ckpt is None:
            torch.manual_seed(0)
            ckpt = _checkpoint_for(build_model("mv3", 8, size, width=0.25), size, Path(tmp))
        plain, card = load_checkpoint(ckpt, device="cpu", prepare=False)
        fast = prepare_model(plain, size)
        onnx = OnnxClassifier(export_model(ckpt, Path(tmp) / "onnx")["onnx"])
        n = len(images)
        cases = {
            "before": lambda: _before(plain, images),
            "fp32": lambda: predict_arrays(fast, images, precision="fp32"),
            "bf16": lambda: predict_arrays(fast, images, precision="bf16"),
            "onnxruntime": lambda: onnx.probs(images),
        }
        out = {"input_size": size, "images": n, "threads": torch.get_num_threads(),
               "img_per_s": {k: round(_rate(f, n, repeats), 1) for k, f in cases.items()}}
        out["speedup_bf16_vs_before"] = round(out["img_per_s"]["bf16"]
                                              / out["img_per_s"]["before"], 2)
        if card.get("classes", [""])[0] != "C0":  # a trained model: agreement with fp32
            ref = cases["before"]().argmax(1)
            out["same_class_as_fp32"] = {
                k: round(float((cases[k]().argmax(1) == ref).mean()), 5)
                for k in ("fp32", "bf16", "onnxruntime")}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", type=Path, required=True, help="folder of real cell images")
    p.add_argument("--checkpoint", type=Path, help="trained run/ckpt (its input size only)")
    p.add_argument("--limit", type=int, default=1024, help="images per case")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    results = []
    if args.checkpoint:
        _, card = load_checkpoint(args.checkpoint, device="cpu", prepare=False)
        size = int(card["input_size"])
        results.append(bench(size, _images(args.sample, size, args.limit), args.checkpoint,
                             args.repeats))
        print(json.dumps(results[-1]), flush=True)
    for size in (64, 128):
        results.append(bench(size, _images(args.sample, size, args.limit), None, args.repeats))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
