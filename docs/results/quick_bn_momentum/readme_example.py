"""Put the end of a real `hemacnn train` log (from its last 'stopped:' line to 'run folder:') into
README.md's example block, verbatim:  python readme_example.py RUN.log README.md"""
import sys
from pathlib import Path

log, readme = Path(sys.argv[1]), Path(sys.argv[2])
lines = log.read_text(encoding="utf-8").splitlines()
start = max(i for i, ln in enumerate(lines) if ln.startswith("stopped:"))
block = "\n".join(ln.rstrip() for ln in lines[start:])
text = readme.read_text(encoding="utf-8")
MARKER = "its output ended with"
i = text.index(MARKER)
a = text.index("```\n", i) + 4
b = text.index("```\n", a)
readme.write_text(text[:a] + block + "\n" + text[b:], encoding="utf-8")
