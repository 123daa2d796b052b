"""Inference against the peak of the CPU it runs on: every path, img/s, GFLOP/s, share of peak.

Run by hand (never inside tests), on an otherwise idle machine:
    python benchmarks/bench_predict.py --json docs/results/bench_predict_zen4.json
    python benchmarks/bench_predict.py --evaluate RUN --data DIR --json out.json  # + evaluate
    python benchmarks/bench_predict.py ... --export-cost RUN [RUN ...]  # + export vs training
    python benchmarks/bench_predict.py --table out.json [--docs docs/benchmarks.md]  # tables

What it measures, in one process (issue 33):

* the **matmul peaks** of this CPU, fp32 and bf16, on all threads (the best of 1024² and
  2048² matmuls), before the cases and again after them: the ceilings each path is a share of.
* for each **model** (the quick config's MV3 at quarter width, timm's MobileNetV2 as
  ``configs/finetune_mnv2.yaml`` fine-tunes it, the paper's full-width MV3) at 64/128/224 px and
  each **path**, img/s of the forward pass + softmax on a batch, its GFLOP/s
  (``torch.utils.flop_counter`` on one image's forward pass: convolutions and matmuls, the work
  the peak measures) and its share of the matching peak (fp32 paths of the fp32 peak, bf16 paths
  of the bf16 peak), and how far its probabilities are from fp32 torch (max absolute
  difference; the share of images given the same class):

  - ``torch`` fp32: BatchNorm folded, channels-last (what ``evaluate`` runs from a checkpoint);
    ``torch_nchw``: the same channels-first;
  - ``jit``: the folded model traced, frozen and optimised by TorchScript;
  - ``inductor``: ``torch.compile`` (only for ``--inductor-models`` at ``--inductor-sizes``,
    by default the quick model at 128 px: each compile took 20-120 s here);
  - ``onnxruntime``: the model exported by ``hemacnn export`` and run by the product's
    :class:`OnnxClassifier` session (ONNX Runtime's CPU execution provider, every graph
    optimisation); ONNX Runtime has no bf16 path on x86 (its CPU provider's bf16 GEMM option is
    for ARM only), so it appears under fp32 only;
  - ``openvino`` (when the package imports; it is not a hemacnn dependency): the same ONNX file
    compiled by OpenVINO's CPU plugin, fp32 and with ``INFERENCE_PRECISION_HINT=bf16``;
  - bf16: ``torch_bf16`` (autocast, as ``--precision bf16`` runs), ``jit_bf16``,
    ``inductor_bf16``, ``openvino_bf16``.
* **depthwise** models: the fine-tuned MobileNetV2 at 128 px with batches 8/32/128, channels-last
  and channels-first, and the share of its FLOPs in depthwise convolutions.
* with ``--evaluate RUN --data DIR``: ``hemacnn evaluate`` itself (a new process, fp32 and bf16),
  its own throughput record (img/s of the network, from the evaluation JSON) times the model's
  GFLOP/img, against the peaks measured in this process right before and after.
* with ``--export-cost RUN ...``: the end-of-training export of each run (on a copy) against
  the run's training time.

Load average and CPU are recorded with the numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from hemacnn.card import build_card
from hemacnn.inference.engine import bf16_native, prepare_model
from hemacnn.inference.export import export_model
from hemacnn.inference.onnxmodel import OnnxClassifier
from hemacnn.models import build_model

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import matmul_peak  # noqa: E402 - the same peak as the training benchmark

MODELS = {  # name: (registry name, options)
    "quick": ("mv3", {"width": 0.25}),
    "mobilenetv2": ("timm/mobilenetv2_100", {"input_mean": [0.5] * 3, "input_std": [0.5] * 3}),
    "paper_mv3": ("mv3", {"width": 1.0}),
}
FP32_PATHS = ("torch", "torch_nchw", "jit", "inductor", "onnxruntime", "openvino")
BF16_PATHS = ("torch_bf16", "jit_bf16", "inductor_bf16", "openvino_bf16")


def ort_matmul_peak(n: int, seconds: float) -> float:
    """GFLOP/s of repeated n x n fp32 matmuls in ONNX Runtime on all threads: its GEMM kernels
    (MLAS) beat PyTorch's on some CPUs, and a ceiling below what a path reaches is no ceiling."""
    # lazy: onnx and onnxruntime only for this measurement
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    spec = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ABY"]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["Y"])], "mm",
                              spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"A": np.random.rand(n, n).astype(np.float32),
            "B": np.random.rand(n, n).astype(np.float32)}
    for _ in range(3):
        sess.run(None, feed)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, feed)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e9


def peaks(seconds: float = 1.5) -> dict[str, float]:
    """GFLOP/s of repeated square matmuls on all threads: bf16 PyTorch's, fp32 the better of
    PyTorch's and ONNX Runtime's (each the best of 1024² and 2048²; PyTorch's is the training
    benchmark's :func:`matmul_peak`); ``fp32_torch`` and ``fp32_onnxruntime`` give both."""
    out = {name: round(max(matmul_peak(dtype, n, seconds) for n in (1024, 2048)), 1)
           for name, dtype in (("fp32_torch", torch.float32), ("bf16", torch.bfloat16))}
    out["fp32_onnxruntime"] = round(max(ort_matmul_peak(n, seconds) for n in (1024, 2048)), 1)
    out["fp32"] = max(out["fp32_torch"], out["fp32_onnxruntime"])
    return out


def gflop_per_image(model: torch.nn.Module, size: int) -> tuple[float, float]:
    """GFLOP of one image's forward pass, and the share of it in depthwise convolutions."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.rand(1, 3, size, size))
    total = counter.get_total_flops()
    depthwise = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
            depthwise += _conv_flops(m, model, size)
    return total / 1e9, depthwise / max(total, 1)


def _conv_flops(conv: torch.nn.Conv2d, model: torch.nn.Module, size: int) -> int:
    """FLOPs of one convolution inside ``model`` for one image (its output shape by a hook)."""
    shapes = []
    handle = conv.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
    with torch.no_grad():
        model(torch.rand(1, 3, size, size))
    handle.remove()
    kh, kw = conv.kernel_size
    return 2 * kh * kw * (conv.in_channels // conv.groups) * int(np.prod(shapes[0][1:]))


def rate(fn: Callable[[], object], n: int, seconds: float) -> float:
    """img/s of ``fn`` (``n`` images a call): one warm-up call, then calls for ``seconds``."""
    fn()
    count, t0 = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - t0 < seconds:
        fn()
        count += 1
    return n * count / (time.perf_counter() - t0)


def _softmax(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits).float(), dim=1).numpy()


def _checkpoint(model: torch.nn.Module, size: int, folder: Path) -> Path:
    card = build_card(classes=[f"C{i}" for i in range(8)],
                      class_names=[f"class {i}" for i in range(8)], input_size=size,
                      resize_method="nearest", arch=model.hemacnn_arch, data_root=None,
                      manifest_hash=None, seed=0)
    path = folder / f"model-{size}.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in model.state_dict().items()},
                "hyper_parameters": {"card": card}}, path)
    return path


def _quiet(fn: Callable[[], object]) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def build_paths(plain: torch.nn.Module, size: int, x: torch.Tensor, onnx: Path,
                inductor: bool) -> tuple[dict[str, Callable[[], np.ndarray]], dict]:
    """Each path as a call that returns the batch's probabilities; build seconds and skips."""
    fast = prepare_model(plain, size)
    for p in fast.parameters():
        p.requires_grad_(False)
    nchw = copy.deepcopy(fast).to(memory_format=torch.contiguous_format)
    xl = x.contiguous(memory_format=torch.channels_last)
    xb = xl.to(torch.bfloat16)
    notes: dict = {"build_s": {}, "skipped": {}}

    def bf16(fn):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()

    paths: dict[str, Callable[[], np.ndarray]] = {
        "torch": lambda: _softmax(fast(xl)),
        "torch_nchw": lambda: _softmax(nchw(x)),
        "torch_bf16": lambda: _softmax(bf16(lambda: fast(xl))),
    }
    t0 = time.perf_counter()
    jit = _quiet(lambda: torch.jit.optimize_for_inference(
        torch.jit.freeze(torch.jit.trace(fast, xl[:1]))))
    jit_bf = _quiet(lambda: torch.jit.optimize_for_inference(torch.jit.freeze(
        torch.jit.trace(prepare_model(plain, size).to(torch.bfloat16).requires_grad_(False),
                        xb[:1]))))
    notes["build_s"]["jit"] = round(time.perf_counter() - t0, 2)
    paths["jit"] = lambda: _softmax(jit(xl))
    paths["jit_bf16"] = lambda: _softmax(jit_bf(xb))
    if inductor:
        compiled = torch.compile(fast)
        for name, fn in (("inductor", lambda: compiled(xl)),
                         ("inductor_bf16", lambda: bf16(lambda: compiled(xl)))):
            t0 = time.perf_counter()
            try:
                _quiet(fn)
            except Exception as exc:  # noqa: BLE001 - no compiler, an unsupported op...
                notes["skipped"][name] = str(exc).splitlines()[0][:200]
                continue
            notes["build_s"][name] = round(time.perf_counter() - t0, 1)
            paths[name] = (lambda f: lambda: _softmax(f()))(fn)
    clf = OnnxClassifier(onnx)
    xn = x.contiguous().numpy()
    paths["onnxruntime"] = lambda: _softmax(clf.session.run(None, {clf.input: xn})[0])
    compiled_ov, version = _openvino(onnx)
    for name, (model, build_s) in compiled_ov.items():
        notes["build_s"][name] = build_s
        paths[name] = (lambda r: lambda: _softmax(r.infer({0: xn})[0]))(
            model.create_infer_request())
    if version:
        notes["openvino"] = version
    else:
        notes["skipped"]["openvino"] = "openvino not installed"
    notes["skipped"]["onnxruntime_bf16"] = ("ONNX Runtime's CPU execution provider has no bf16 "
                                            "convolution kernels on x86")
    return paths, notes


def _openvino(onnx: Path) -> tuple[dict[str, tuple[object, float]], str | None]:
    """The ONNX file compiled by OpenVINO's CPU plugin, fp32 and bf16 (with build seconds);
    nothing when the package is not installed (it is no hemacnn dependency)."""
    try:
        import openvino as ov
    except ImportError:
        return {}, None
    core = ov.Core()
    model, out = core.read_model(str(onnx)), {}
    for name, hint in (("openvino", "f32"), ("openvino_bf16", "bf16")):
        t0 = time.perf_counter()
        compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads()})
        out[name] = (compiled, round(time.perf_counter() - t0, 2))
    return out, ov.__version__


def bench_case(model_name: str, size: int, inductor: bool, seconds: float,
               batch: int | None = None) -> dict:
    """Every path for one model at one input size."""
    arch, opts = MODELS[model_name]
    torch.manual_seed(0)
    plain = build_model(arch, 8, size, options=opts).eval()
    gflop, dw_share = gflop_per_image(plain, size)
    if batch is None:  # ~20 GFLOP a call: long enough to time, short enough for the big models
        batch = int(max(2, min(64, 20 // max(gflop, 1e-3))))
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        ckpt = _checkpoint(plain, size, Path(tmp))
        onnx = _quiet(lambda: export_model(ckpt, Path(tmp) / "onnx"))["onnx"]
        paths, notes = build_paths(plain, size, x, onnx, inductor)
        ref = _softmax(plain(x))
        out = {"model": model_name, "arch": arch, "input_size": size, "batch": batch,
               "gflop_per_image": round(gflop, 4), "depthwise_flop_share": round(dw_share, 4),
               **notes, "img_per_s": {}, "max_abs_diff": {}, "same_class": {}}
        for name, fn in paths.items():
            probs = fn()
            out["max_abs_diff"][name] = float(f"{np.abs(probs - ref).max():.3g}")
            out["same_class"][name] = round(float((probs.argmax(1) == ref.argmax(1)).mean()), 4)
            out["img_per_s"][name] = round(rate(fn, batch, seconds), 2)
            print(f"  {model_name} {size}px {name}: {out['img_per_s'][name]} img/s", flush=True)
    out["gflop_per_s"] = {k: round(v * gflop, 1) for k, v in out["img_per_s"].items()}
    return out


def depthwise_study(seconds: float) -> list[dict]:
    """The fine-tuned MobileNetV2 at 128 px: batch size and memory layout."""
    rows = []
    arch, opts = MODELS["mobilenetv2"]
    torch.manual_seed(0)
    plain = build_model(arch, 8, 128, options=opts).eval()
    fast = prepare_model(plain, 128).requires_grad_(False)
    nchw = copy.deepcopy(fast).to(memory_format=torch.contiguous_format)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        onnx = _quiet(lambda: export_model(_checkpoint(plain, 128, Path(tmp)),
                                           Path(tmp) / "onnx"))["onnx"]
        clf = OnnxClassifier(onnx)
        compiled_ov, _ = _openvino(onnx)
        for batch in (8, 32, 128):
            calls = _depthwise_calls(fast, nchw, clf, torch.rand(batch, 3, 128, 128))
            for name, (model, _) in compiled_ov.items():
                xn = np.random.default_rng(0).random((batch, 3, 128, 128), dtype=np.float32)
                calls[name] = (lambda r, a: lambda: r.infer({0: a}))(
                    model.create_infer_request(), xn)
            row = {"batch": batch, "img_per_s": {name: round(rate(fn, batch, seconds), 1)
                                                 for name, fn in calls.items()}}
            rows.append(row)
            print(f"  depthwise batch {batch}: {row['img_per_s']}", flush=True)
    return rows


def _depthwise_calls(fast: torch.nn.Module, nchw: torch.nn.Module, clf: OnnxClassifier,
                     x: torch.Tensor) -> dict[str, Callable[[], object]]:
    xl, xn = x.contiguous(memory_format=torch.channels_last), x.numpy()
    return {"torch": lambda: fast(xl), "torch_nchw": lambda: nchw(x),
            "torch_bf16": lambda: _bf16_call(fast, xl),
            "onnxruntime": lambda: clf.session.run(None, {clf.input: xn})}


def _bf16_call(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x)


def evaluate_case(run: Path, data: Path, precision: str) -> dict:
    """``hemacnn evaluate RUN --data DIR`` in a new process; its throughput record."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "hemacnn.cli", "evaluate", str(run), "--data", str(data),
               "--precision", precision, "--out", tmp]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        result = json.loads(next(Path(tmp).glob("evaluation_*.json")).read_text())
    return {"command": "hemacnn " + " ".join(cmd[3:-2]), "wall_s": round(wall, 1),
            "inference": result["inference"], "throughput": result["throughput"],
            "accuracy": result["accuracy"], "n": result["n"]}


def evaluate_block(run: Path, data: Path) -> dict:
    """``hemacnn evaluate`` fp32 and bf16 between two peak measurements."""
    # lazy: only this mode reads a run
    from hemacnn.inference.loading import load_checkpoint

    model, card = load_checkpoint(run, device="cpu", prepare=False)
    size = int(card["input_size"])
    gflop, _ = gflop_per_image(model, size)
    before = peaks()
    cases = {p: evaluate_case(run, data, p) for p in ("fp32", "bf16")}
    after = peaks()
    for p, case in cases.items():
        case["gflop_per_s"] = round(case["throughput"]["images_per_s"] * gflop, 1)
        case["share_of_peak"] = round(case["gflop_per_s"] / max(before[p], after[p]), 3)
        print(f"  evaluate {p}: {case['throughput']['images_per_s']} img/s, "
              f"{case['share_of_peak']:.1%} of the {p} peak", flush=True)
    return {"run": str(run), "data": str(data), "input_size": size,
            "gflop_per_image": round(gflop, 4), "peaks_before": before, "peaks_after": after,
            "cases": cases}


def export_cost(runs: list[Path]) -> list[dict]:
    """Seconds of the end-of-training export (``export_after_training``, on a copy of each run)
    against the run's training time (its ``env.json`` start to its ``last.ckpt``)."""
    # lazy: only this mode trains nothing but exports runs
    import shutil
    from datetime import datetime

    from hemacnn.training.train import export_after_training

    rows = []
    for run in runs:
        started = json.loads((run / "env.json").read_text())["started"]
        start = datetime.strptime(started, "%Y-%m-%dT%H:%M:%S%z").timestamp()
        training_s = (run / "checkpoints" / "last.ckpt").stat().st_mtime - start
        with tempfile.TemporaryDirectory() as tmp:
            copy = shutil.copytree(run, Path(tmp) / "run", ignore=shutil.ignore_patterns("export"))
            t0 = time.perf_counter()
            ok = export_after_training(copy, "always", training_s)
            export_s = time.perf_counter() - t0
        card = json.loads((run / "model_card.json").read_text())
        rows.append({"run": str(run), "arch": card["arch"]["name"],
                     "input_size": card["input_size"], "exported": ok,
                     "training_s": round(training_s, 1), "export_s": round(export_s, 1),
                     "share": round(export_s / training_s, 4)})
        print(f"  export {run}: {rows[-1]}", flush=True)
    return rows


def _git_head() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).parent)
    return out.stdout.strip()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                        if f in have]
    except OSError:
        pass
    return []


def shares(case: dict, pk: dict[str, float]) -> dict[str, float]:
    """Each path's GFLOP/s as a share of its precision's peak."""
    return {k: round(v / pk["bf16" if k.endswith("bf16") else "fp32"], 3)
            for k, v in case["gflop_per_s"].items()}


def table(results: dict) -> str:
    """The docs' tables (Markdown) from a JSON this script wrote."""
    pk = results["peak_gflop_per_s"]
    lines = [f"CPU: {results['cpu']} ({', '.join(results['cpu_flags'])}), "
             f"{results['threads']} threads; matmul peak fp32 {pk['fp32']:.0f} GFLOP/s"
             + (f" (PyTorch {pk['fp32_torch']:.0f}, ONNX Runtime {pk['fp32_onnxruntime']:.0f})"
                if "fp32_torch" in pk else "") + ", bf16 "
             f"{pk['bf16']:.0f} GFLOP/s ({'native' if results['bf16_native'] else 'emulated'} "
             f"bf16); load average {results['load_average'][0]:.2f} at the start.", ""]
    if results.get("note"):
        lines[-1:-1] = ["", f"Note: {results['note']}"]
    names = [p for p in (*FP32_PATHS, *BF16_PATHS)
             if any(p in c["img_per_s"] for c in results["cases"])]
    lines += ["| model, input | GFLOP/img | depthwise FLOPs | "
              + " | ".join(f"`{n}`" for n in names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    for c in results["cases"]:
        share = shares(c, pk)
        cells = [f"{c['img_per_s'][n]:.1f} img/s, {share[n]:.0%}" if n in share else "–"
                 for n in names]
        lines.append(f"| {c['model']}, {c['input_size']} px | {c['gflop_per_image']:.3g} | "
                     f"{c['depthwise_flop_share']:.1%} | " + " | ".join(cells) + " |")
    if results.get("depthwise"):
        lines += ["", "MobileNetV2 at 128 px (img/s) by batch size and layout:", "",
                  "| batch | " + " | ".join(f"`{k}`" for k in results["depthwise"][0]["img_per_s"])
                  + " |", "|---|" + "---|" * len(results["depthwise"][0]["img_per_s"])]
        for r in results["depthwise"]:
            lines.append(f"| {r['batch']} | "
                         + " | ".join(f"{v:.1f}" for v in r["img_per_s"].values()) + " |")
    if results.get("export_cost"):
        lines += ["", "The export at the end of training (`trainer.export`) against the training "
                      "time:", "", "| run | model | training | export | share |",
                  "|---|---|---|---|---|"]
        for r in results["export_cost"]:
            lines.append(f"| `{Path(r['run']).name}` | {r['arch']}, {r['input_size']} px | "
                         f"{r['training_s']:.0f} s | {r['export_s']:.1f} s | {r['share']:.1%} |")
    ev = results.get("evaluate")
    if ev:
        lines += ["", f"`hemacnn evaluate` itself ({ev['input_size']} px, "
                      f"{ev['gflop_per_image']:.2f} GFLOP/img, peaks measured right before and "
                      "after):", "", "| precision | path | images | img/s | GFLOP/s | of peak |",
                  "|---|---|---|---|---|---|"]
        for p, case in ev["cases"].items():
            lines.append(f"| {p} | {case['inference']['backend']} | {case['n']} | "
                         f"{case['throughput']['images_per_s']:.1f} | {case['gflop_per_s']:.0f} "
                         f"| {case['share_of_peak']:.0%} |")
    return "\n".join(lines)


BEGIN, END = "<!-- bench_predict:begin -->", "<!-- bench_predict:end -->"


def write_docs(path: Path, text: str) -> None:
    """Replace the lines between the markers of ``path`` with ``text``."""
    doc = path.read_text(encoding="utf-8")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    p.add_argument("--inductor-sizes", type=int, nargs="*", default=[128],
                   help="sizes at which torch.compile is measured too (20-120 s a compile)")
    p.add_argument("--inductor-models", nargs="*", default=["quick"], choices=list(MODELS),
                   help="models for which torch.compile is measured (at --inductor-sizes)")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per path")
    p.add_argument("--evaluate", type=Path, metavar="RUN", help="also time `hemacnn evaluate`")
    p.add_argument("--data", type=Path, help="with --evaluate: the images to evaluate")
    p.add_argument("--export-cost", type=Path, nargs="+", metavar="RUN",
                   help="also time the end-of-training export of these runs against training")
    p.add_argument("--no-cases", action="store_true", help="only the peaks (and --evaluate)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--note", default="", help="a note kept in the JSON (conditions, caveats)")
    p.add_argument("--table", type=Path, help="print the Markdown tables of this JSON and stop")
    p.add_argument("--docs", type=Path, help="with --table: write the tables into this Markdown "
                   f"file, between its {BEGIN} and {END} lines")
    args = p.parse_args()
    if args.table:
        text = table(json.loads(args.table.read_text()))
        if args.docs:
            write_docs(args.docs, text)
        print(text)
        return
    t_start = time.perf_counter()
    results = {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "bf16_native": bf16_native(torch.device("cpu")),
               "load_average": [round(v, 2) for v in os.getloadavg()],
               "command": "python " + " ".join(sys.argv), "git": _git_head(),
               "note": args.note}
    pk = peaks()
    print(f"matmul peak GFLOP/s: {pk}", flush=True)
    results["cases"] = []
    if not args.no_cases:
        for model in args.models:
            for size in args.sizes:
                inductor = size in args.inductor_sizes and model in args.inductor_models
                results["cases"].append(bench_case(model, size, inductor, args.seconds))
        results["depthwise"] = depthwise_study(args.seconds)
    if args.evaluate:
        if args.data is None:
            p.error("--evaluate needs --data")
        results["evaluate"] = evaluate_block(args.evaluate, args.data)
    if args.export_cost:
        results["export_cost"] = export_cost(args.export_cost)
    after = peaks()
    results["peaks_before_after"] = [pk, after]
    results["peak_gflop_per_s"] = {k: max(pk[k], after[k]) for k in pk}
    for case in results["cases"]:
        case["share_of_peak"] = shares(case, results["peak_gflop_per_s"])
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    results["wall_s"] = round(time.perf_counter() - t_start, 1)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
