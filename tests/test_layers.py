"""The package's layering: import-linter contracts (.importlinter) and no import cycle."""

from __future__ import annotations

import ast
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
    ("inference/loading.py", "from hemacnn.inference.predict import run_predict"),  # reaches up
    ("inference/predict.py", "from hemacnn.inference.export import export_model"),  # old circle
    ("scoring/metrics.py", "from hemacnn.models import build_model"),  # arrays-only metrics
    ("inference/explain.py", "from hemacnn.training.train import train"),  # below training
    ("data/images.py", "from hemacnn.scoring.metrics import compute_metrics"),  # data is the floor
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



def _function_level_imports(tree: ast.AST) -> list[ast.stmt]:
    found = {}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found[node.lineno] = node
    return [found[k] for k in sorted(found)]


def unexplained_imports(source: str) -> list[tuple[int, str]]:
    """(line, import) of function-level imports without a ``# lazy:`` comment on their lines
    or in the comment right above; an import right below an explained one shares its comment."""
    lines = source.splitlines()
    explained_until = -1  # the last line of the block the latest comment explains
    stray = []
    for node in _function_level_imports(ast.parse(source)):
        first = node.lineno - 1  # 0-based: the import's first line; walk up over its comment
        while first > 0 and lines[first - 1].lstrip().startswith("#"):
            first -= 1
        own = lines[first:node.end_lineno]
        if any("# lazy:" in line for line in own) or node.lineno - 1 == explained_until:
            explained_until = node.end_lineno
        else:
            stray.append((node.lineno, ast.unparse(node)))
    return stray


def test_function_level_imports_say_why():
    # Imports live at module level; outside the CLI (which keeps --help free of torch) a
    # function may import only what a measured start-up cost keeps out, saying so in a
    # `# lazy:` comment with the figure.
    package = REPO / "src" / "hemacnn"
    stray = [f"{path.relative_to(REPO)}:{line}: {text}"
             for path in sorted(package.rglob("*.py")) if path != package / "cli.py"
             for line, text in unexplained_imports(path.read_text(encoding="utf-8"))]
    assert not stray, "function-level imports without a `# lazy:` reason:\n" + "\n".join(stray)


def test_an_unexplained_function_level_import_is_caught():
    source = ("import os\n\n\ndef f():\n    # lazy: ~1 s,\n    # only f needs it\n"
              "    import json\n    import csv\n\n    import io\n\n\n"
              "def g():\n    import re  # lazy: ~0 ms\n    from x import (\n        y,\n    )\n"
              "    return re\n\n\ndef h():\n    import zlib\n")
    assert unexplained_imports(source) == [(10, "import io"), (22, "import zlib")]


def test_vulture_finds_no_dead_code():
    # Unused functions, classes, variables and imports at vulture's 80% confidence: none (the
    # Lightning and pydantic hooks it cannot see as used are written so it need not guess).
    result = subprocess.run([sys.executable, "-m", "vulture", "--min-confidence", "80",
                             str(REPO / "src")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_vulture_reports_planted_dead_code(tmp_path: Path):
    planted = tmp_path / "planted.py"
    planted.write_text("import json\n\n\ndef used():\n    return 1\n\n\nused()\n",
                       encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "vulture", "--min-confidence", "80",
                             str(planted)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "unused import 'json'" in result.stdout
