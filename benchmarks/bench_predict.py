"""Prediction throughput: the forward pass as `evaluate`/`predict` run it, in img/s.

Run by hand (never inside tests):
    python benchmarks/bench_predict.py --sample ../shared/data/bm_sample/BM_cytomorphology_data
    python benchmarks/bench_predict.py --checkpoint runs/quick-X --sample ...  # + agreement
    python benchmarks/bench_predict.py ... --run RUN --json out.json  # + start-up seconds
    python benchmarks/bench_predict.py --table out.json   # the README's tables from the JSON

Cases, each on the same real images (the sample's cells preprocessed at the input size),
batch 64, forward + softmax only (decoding is timed separately, once):

* ``before``: what `evaluate` did before the fast path: fp32, channels-first, BatchNorm unfused.
* ``fp32``: BatchNorm folded into the convs, channels-last, fp32.
* ``jit``: the folded model traced, frozen and optimised by TorchScript
  (``torch.jit.optimize_for_inference``: oneDNN convolutions with the ReLU fused in).
* ``bf16``: the folded model in bf16 autocast (the default on CPUs with native bf16; where bf16
  is emulated it is measured but not used by default).
* ``onnxruntime``: the exported ONNX file run by ONNX Runtime (fp32, all graph optimisations,
  Conv+ReLU fused).

Each case also gets its GFLOP/s (``torch.utils.flop_counter`` on one image's forward pass) and
its share of this machine's matmul peak, measured in the same run for fp32 and bf16 (the bf16
peak is what the hardware can do at best; where bf16 is not native it is an emulated figure).
With ``--run`` the start-up of ``hemacnn predict RUN one.jpg`` (median wall of 5, each a new
process; once from the checkpoint, once with a fresh ONNX export) and of ``hemacnn --help``
are measured too (``--startup-only``: nothing else).

Model: the quick config's MV3 (quarter width) at 64 and 128 px, untrained unless
``--checkpoint`` is given (speed does not depend on the weights). With a checkpoint the bf16
and ONNX classes are also compared with fp32 on every image.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from hemacnn.data.images import preprocess_image
from hemacnn.inference.engine import bf16_native, prepare_model
from hemacnn.inference.export import export_model
from hemacnn.inference.loading import load_checkpoint, predict_arrays
from hemacnn.inference.onnxmodel import EXPORT_DIR, OnnxClassifier
from hemacnn.models import build_model

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import matmul_peak  # noqa: E402 - the same peak as the training benchmark


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
def _plain_probs(model: torch.nn.Module, images: np.ndarray, batch: int = 64,
                 memory_format: torch.memory_format = torch.contiguous_format) -> np.ndarray:
    """fp32 softmax of ``model`` batch by batch, with no other step of the inference path.
    Channels-first on the unfused trained module is the forward pass as it was (``before``)."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2).float() / 255
        out.append(torch.softmax(model(x.contiguous(memory_format=memory_format)),
                                 dim=1).numpy())
    return np.concatenate(out)


@torch.no_grad()
def _traced(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """The folded model traced, frozen and optimised by TorchScript for inference."""
    x = torch.rand(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))


def _gflop_per_image(model: torch.nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.rand(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def _checkpoint_for(model: torch.nn.Module, size: int, folder: Path) -> Path:
    card = {"format": "hemacnn-card/1", "classes": [f"C{i}" for i in range(8)],
            "class_names": [f"class {i}" for i in range(8)], "input_size": size,
            "resize_method": "nearest", "arch": model.hemacnn_arch}
    path = folder / f"mv3-{size}.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in model.state_dict().items()},
                "hyper_parameters": {"card": card}}, path)
    return path


def bench(size: int, images: np.ndarray, ckpt: Path | None, repeats: int,
          peaks: dict[str, float]) -> dict:
    """img/s of each case at one input size (and agreement with fp32 when trained)."""
    with tempfile.TemporaryDirectory() as tmp:
        if ckpt is None:
            torch.manual_seed(0)
            ckpt = _checkpoint_for(build_model("mv3", 8, size, width=0.25), size, Path(tmp))
        plain, card = load_checkpoint(ckpt, device="cpu", prepare=False)
        fast = prepare_model(plain, size)
        t0 = time.perf_counter()
        traced = _traced(fast, size)
        jit_build_s = time.perf_counter() - t0
        onnx = OnnxClassifier(export_model(ckpt, Path(tmp) / "onnx")["onnx"])
        n = len(images)
        cases = {
            "before": lambda: _plain_probs(plain, images),
            "fp32": lambda: predict_arrays(fast, images, precision="fp32"),
            "jit": lambda: _plain_probs(traced, images,
                                        memory_format=torch.channels_last),
            "bf16": lambda: predict_arrays(fast, images, precision="bf16"),
            "onnxruntime": lambda: onnx.probs(images),
        }
        if not bf16_native(torch.device("cpu")):  # emulated bf16 is ~9x slower than fp32
            del cases["bf16"]
        gflop = _gflop_per_image(plain, size)
        rates = {k: round(_rate(f, n, repeats), 1) for k, f in cases.items()}
        out = {"input_size": size, "images": n, "threads": torch.get_num_threads(),
               "arch": card["arch"]["name"], "width": card["arch"]["options"].get("width"),
               "gflop_per_image": round(gflop, 3), "jit_build_s": round(jit_build_s, 2),
               "img_per_s": rates,
               "gflop_per_s": {k: round(r * gflop, 1) for k, r in rates.items()},
               "share_of_bf16_peak": {k: round(r * gflop / peaks["bf16"], 3)
                                      for k, r in rates.items()},
               "share_of_fp32_peak": {k: round(r * gflop / peaks["fp32"], 3)
                                      for k, r in rates.items()}}
        out["speedup_vs_before"] = {k: round(r / rates["before"], 2) for k, r in rates.items()}
        if card.get("classes", [""])[0] != "C0":  # a trained model: agreement with fp32
            ref = cases["before"]().argmax(1)
            out["same_class_as_fp32"] = {
                k: round(float((cases[k]().argmax(1) == ref).mean()), 5)
                for k in cases if k != "before"}
    return out


def _median_wall(cmd: list[str], runs: int = 5) -> float:
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
    return round(statistics.median(walls), 3)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def startup(run: Path, sample: Path) -> dict:
    """Median wall seconds of a one-image ``hemacnn predict`` of the run (its checkpoint, through
    torch), of the same run once ``hemacnn export`` gave it a fresh ONNX export (ONNX Runtime,
    no torch), and of ``hemacnn --help``. The run is copied first: its own folder is not touched."""
    image = next(iter(sorted(sample.rglob("*.jpg"))))
    with tempfile.TemporaryDirectory() as tmp:
        cli = [sys.executable, "-m", "hemacnn.cli"]
        copy = Path(tmp) / "run"
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns(EXPORT_DIR))
        one = [*cli, "predict", str(copy), str(image), "--out", f"{tmp}/one.csv"]
        result = {"run": str(run), "image": str(image), "runs": 5,
                  "predict_one_image_s": _median_wall(one)}
        subprocess.run([*cli, "export", str(copy)], check=True, capture_output=True)
        result["predict_one_image_onnx_s"] = _median_wall(one)
        result["help_s"] = _median_wall([*cli, "--help"])
        return result


def table(results: dict) -> str:
    """The README's tables (Markdown) from a JSON this script wrote."""
    peaks = results["peak_gflop_per_s"]
    lines = [f"Machine: {results['machine']}, {results['threads']} threads; matmul peak fp32 "
             f"{peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s "
             f"({'native' if results['bf16_native'] else 'emulated'} bf16).", "",
             "| model, input | GFLOP/img | case | img/s | GFLOP/s | of bf16 peak "
             "| of fp32 peak | vs before |", "|---|---|---|---|---|---|---|---|"]
    def bf16_share(r: dict, k: str) -> str:  # an emulated bf16 "peak" is no ceiling
        return f"{r['share_of_bf16_peak'][k]:.1%}" if results["bf16_native"] else "n/a"

    for r in results["cases"]:
        label = f"{r['arch']} ×{r['width']}, {r['input_size']} px"
        for k, rate in r["img_per_s"].items():
            lines.append(f"| {label} | {r['gflop_per_image']:.2f} | {k} | {rate:.1f} | "
                         f"{r['gflop_per_s'][k]:.1f} | {bf16_share(r, k)} | "
                         f"{r['share_of_fp32_peak'][k]:.1%} | "
                         f"{r['speedup_vs_before'][k]:.2f}× |")
            label = ""
    if results.get("startup"):
        s = results["startup"]
        onnx = (f", the same run with a fresh `hemacnn export` (ONNX Runtime, no torch) "
                f"{s['predict_one_image_onnx_s']:.2f} s" if "predict_one_image_onnx_s" in s
                else "")
        lines += ["", f"Start-up (median wall of {s['runs']} new processes): "
                      f"`hemacnn predict RUN one.jpg` {s['predict_one_image_s']:.2f} s{onnx}, "
                      f"`hemacnn --help` {s['help_s']:.2f} s."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", type=Path, help="folder of real cell images")
    p.add_argument("--checkpoint", type=Path, help="trained run/ckpt (its input size only)")
    p.add_argument("--limit", type=int, default=1024, help="images per case")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--run", type=Path, help="a run folder: also time a one-image predict")
    p.add_argument("--startup-only", action="store_true",
                   help="with --run: only the start-up figures (seconds, not minutes)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--table", type=Path, help="print the Markdown tables of this JSON and stop")
    args = p.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
    if args.sample is None:
        p.error("--sample is required")
    peaks = {"fp32": round(matmul_peak(torch.float32), 1),
             "bf16": round(matmul_peak(torch.bfloat16), 1)}
    print(f"matmul peak GFLOP/s: {peaks}", flush=True)
    results = {"machine": _cpu_name(),
               "threads": torch.get_num_threads(), "bf16_native": bf16_native(torch.device("cpu")),
               "peak_gflop_per_s": peaks, "cases": []}
    if args.run:  # first: ONNX Runtime's spinning thread pool would slow the child processes
        results["startup"] = startup(args.run, args.sample)
        print(json.dumps(results["startup"]), flush=True)
        if args.startup_only:
            if args.json:
                args.json.write_text(json.dumps(results, indent=2) + "\n")
            return
    if args.checkpoint:
        _, card = load_checkpoint(args.checkpoint, device="cpu", prepare=False)
        size = int(card["input_size"])
        results["cases"].append(bench(size, _images(args.sample, size, args.limit),
                                      args.checkpoint, args.repeats, peaks))
        print(json.dumps(results["cases"][-1]), flush=True)
    for size in args.sizes:
        results["cases"].append(bench(size, _images(args.sample, size, args.limit), None,
                                      args.repeats, peaks))
        print(json.dumps(results["cases"][-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
