"""Count the assert statements in a checkout's tests/ (usage: python count_asserts.py REPO)."""

import ast
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
files = sorted(root.glob("tests/**/*.py"))
n = sum(isinstance(node, ast.Assert) for p in files for node in ast.walk(ast.parse(p.read_text())))
print(f"assert statements: {n} in {len(files)} files")
