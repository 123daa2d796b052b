"""The package's layering: import-linter contracts (.importlinter) and no import cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def _lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([*LINT, str(REPO / ".importlinter"), "--no-cache"],
                          cwd=src, env=env, capture_output=True, text=True, timeout=120)


def test_contracts_hold():
    result = _lint(REPO / "src")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, upward", [
    ("loading.py", "from hemacnn.predict import load_images"),  # inference layer reaches up
    ("predict.py", "from hemacnn.export import export_model"),  # the old circle
    ("metrics.py", "from hemacnn.models import build_model"),  # metrics must stay arrays-only
])
def test_a_planted_upward_import_breaks_a_contract(tmp_path: Path, module: str, upward: str):
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "hemacnn", src / "hemacnn",
                    ignore=shutil.ignore_patterns("__pycache__", "*.jpg"))
    target = src / "hemacnn" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{upward}  # planted\n",
                      encoding="utf-8")
    result = _lint(src)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout


def test_no_import_cycle():
    graph = grimp.build_graph("hemacnn")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported == module or module.startswith(imported + "."):
                continue  # a module importing its own package's __init__ is not a cycle
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                cycles.append(" -> ".join((module, *chain)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


RUN_FILE_NAMES = ("model_card.json", "config.yaml", "test_metrics.json", "metrics.csv",
                  "best.ckpt", "last.ckpt", "env.json", "step_loss.csv", "ensemble.json")


def test_run_folder_file_names_are_defined_once():
    # Every other module names a run folder's files through hemacnn.rundir.RunDir.
    stray = []
    for path in sorted((REPO / "src" / "hemacnn").rglob("*.py")):
        if path.name == "rundir.py":
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            for name in RUN_FILE_NAMES:
                if f'"{name}"' in code or f"'{name}'" in code:
                    stray.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not stray, "run-folder file names outside rundir.py:\n" + "\n".join(stray)
