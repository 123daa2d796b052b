"""The documentation says what the code does: commands and options exist, the config reference
lists every field with its default.

Every ``hemacnn`` command line in a shell code block of README.md or docs/ (the committed
results under docs/results/ aside: they record commands as they were run) is checked against
the real argument parser of :mod:`hemacnn.cli`; the configuration reference that the MkDocs hook
generates is checked against the pydantic models. Neither imports torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from hemacnn.cli import build_parser
from hemacnn.config import Config

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
HOOK = DOCS / "hooks" / "config_reference.py"
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "shell-session", "zsh"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
SEPARATORS = {"&&", "||", ";", "|"}


# --- commands in code blocks ------------------------------------------------------------
@dataclass(frozen=True)
class Invocation:
    """One ``hemacnn ...`` command found in a code block: where it is and its arguments."""

    where: str
    args: tuple[str, ...]


def code_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every fenced code block, indents removed."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        start = FENCE.match(lines[i])
        if not start:
            i += 1
            continue
        indent, fence = len(start["indent"]), start["fence"]
        body, i = [], i + 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        blocks.append((start["lang"].lower(), i - len(body), body))  # 1-based fence line
        i += 1
    return blocks


def command_lines(body: list[str], lang: str) -> list[tuple[int, str]]:
    """(offset, logical line) of the commands in a block: continuations joined, prompts gone.

    In a console block with ``$ `` prompts only the prompted lines are commands (the rest is
    output); in a script block every line is.
    """
    prompted = any(line.lstrip().startswith("$ ") for line in body)
    commands, current, first = [], "", 0
    for offset, line in enumerate(body):
        text = line.strip()
        if not current:
            if prompted and lang in ("console", "shell-session"):
                if not text.startswith("$ "):
                    continue
            text = text.removeprefix("$ ")
            first = offset
        if text.endswith("\\"):
            current += text[:-1] + " "
            continue
        commands.append((first, current + text))
        current = ""
    if current:
        commands.append((first, current))
    return commands


def _tokens(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in prose-like text: fall back to plain words
        return line.split("#")[0].split()


def invocations(text: str, source: str) -> list[Invocation]:
    """Every ``hemacnn`` command in the shell code blocks of a Markdown text."""
    found = []
    for lang, first_line, body in code_blocks(text):
        if lang not in SHELL_LANGUAGES:
            continue
        for offset, line in command_lines(body, lang):
            segment: list[str] = []
            for token in [*_tokens(line), ";"]:
                if token not in SEPARATORS:
                    segment.append(token)
                    continue
                for i, word in enumerate(segment):
                    if word == "hemacnn" or word.endswith("/hemacnn"):
                        found.append(Invocation(f"{source}:{first_line + offset + 1}",
                                                tuple(segment[i + 1:])))
                        break
                segment = []
    return found


def _parser_options(parser: argparse.ArgumentParser) -> tuple[set[str], dict]:
    """A parser's option strings and its subcommands' parsers.

    argparse has no public way to list what a parser accepts; ``_actions`` is what completion
    tools (argcomplete, shtab) read as well. The subcommand action is the one whose ``choices``
    maps names to parsers.
    """
    options, subcommands = set(), {}
    for action in parser._actions:
        options.update(action.option_strings)
        if isinstance(action.choices, dict):
            subcommands.update(action.choices)
    return options, subcommands


def _option_words(token: str) -> list[str]:
    """The option names in a token: ``--out=x`` -> --out, ``[--tta|--no-tta]`` -> both."""
    words = token.strip("[]").split("|")
    return [w.split("=")[0] for w in words
            if w.startswith("-") and len(w) > 1 and not re.fullmatch(r"-[\d.]+", w)]


def problems(found: list[Invocation], parser: argparse.ArgumentParser) -> list[str]:
    """One line per unknown subcommand or option, naming where it is written."""
    top_options, subcommands = _parser_options(parser)
    out = []
    for inv in found:
        args = list(inv.args)
        while args and args[0].startswith("-"):  # hemacnn --version
            for word in _option_words(args.pop(0)):
                if word not in top_options:
                    out.append(f"{inv.where}: hemacnn has no option {word}")
        if not args:
            continue
        command, rest = args[0], args[1:]
        if command not in subcommands:
            out.append(f"{inv.where}: hemacnn has no command {command!r} "
                       f"(known: {', '.join(sorted(subcommands))})")
            continue
        options, _ = _parser_options(subcommands[command])
        for token in rest:
            if token == "--":
                break
            for word in _option_words(token):
                if word not in options:
                    out.append(f"{inv.where}: `hemacnn {command}` has no option {word}")
    return out


def documentation_files() -> list[Path]:
    """README.md and every page of the site, without the committed results of real runs."""
    pages = [p for p in sorted(DOCS.rglob("*.md")) if DOCS / "results" not in p.parents]
    return [REPO / "README.md", *pages]


def documented_invocations() -> list[Invocation]:
    found = []
    for path in documentation_files():
        found += invocations(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    return found


def test_every_documented_command_and_option_exists() -> None:
    found = documented_invocations()
    commands = {inv.args[0] for inv in found if inv.args}
    # Guard against a parser that silently finds nothing: the README's four commands at least.
    assert {"demo", "scan", "train", "evaluate", "report", "predict", "serve"} <= commands
    assert problems(found, build_parser()) == []


PLANTED = [
    ("```bash\nhemacnn train configs/quick.yaml --no-such-option\n```\n",
     ["`hemacnn train` has no option --no-such-option"]),
    ("```console\n$ hemacnn evaluate runs/r \\\n    --json --no-such-flag\n{\"n\": 1}\n```\n",
     ["`hemacnn evaluate` has no option --no-such-flag"]),
    ("```\nhemacnn frobnicate RUN\n```\n", ["hemacnn has no command 'frobnicate'"]),
    ("```sh\ncd x && hemacnn predict M c/ --out=p.csv --bogus=1  # --in-a-comment\n```\n",
     ["`hemacnn predict` has no option --bogus"]),
    ("```bash\nhemacnn train C.yaml --differential   # predict's option, not train's\n```\n",
     ["`hemacnn train` has no option --differential"]),
    ("- item\n\n    ```bash\n    hemacnn ensemble a b --out e [--weights 1,1|--nope]\n    ```\n",
     ["`hemacnn ensemble` has no option --nope"]),
    ("```text\nhemacnn train C.yaml --not-a-command-block\n```\n", []),
    ("```bash\nhemacnn train C.yaml --out R --resume R --no-progress model.width=0.5\n"
     "hemacnn ensemble a b --out e --no-tta\nhemacnn --version\n```\n", []),
]


@pytest.mark.parametrize(("markdown", "expected"), PLANTED)
def test_checker_reports_planted_mistakes(markdown: str, expected: list[str]) -> None:
    found = problems(invocations(markdown, "planted.md"), build_parser())
    assert len(found) == len(expected), found
    for line, text in zip(found, expected, strict=True):
        assert line.startswith("planted.md:") and text in line


# --- the generated configuration reference ------------------------------------------------
def _hook():
    spec = importlib.util.spec_from_file_location("config_reference", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROW = re.compile(r"^\| `(?P<key>[\w.]+)` \| `(?P<type>[^|`]*(?:\|[^|`]*)*)` \| [^|]* \| "
                 r"`(?P<default>[^`]*)` \|")


def documented_defaults(markdown: str) -> dict[str, str]:
    """{dotted key: default as written} of every row of the reference's tables."""
    return {m["key"]: m["default"] for m in map(ROW.match, markdown.splitlines()) if m}


def expected_defaults() -> dict[str, str]:
    """{dotted key: default} from the pydantic models themselves, as YAML/JSON text."""
    expected = {}
    for key, field in Config.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for name, sub in section.model_fields.items():
                expected[f"{key}.{name}"] = json.dumps(sub.get_default(call_default_factory=True),
                                                       ensure_ascii=False)
        else:
            expected[key] = json.dumps(field.get_default(call_default_factory=True))
    return expected


def reference_problems(markdown: str) -> list[str]:
    """Fields missing from the reference, fields it invents, and defaults that differ."""
    documented, expected = documented_defaults(markdown), expected_defaults()
    out = [f"{key} is missing" for key in expected if key not in documented]
    out += [f"{key} is not a config field" for key in documented
            if key not in expected and key not in Config.model_fields]
    out += [f"{key}: documented default {documented[key]}, code default {value}"
            for key, value in expected.items() if key in documented and documented[key] != value]
    return out


def test_config_reference_lists_every_field_with_its_default() -> None:
    markdown = _hook().render()
    assert reference_problems(markdown) == []
    assert len(documented_defaults(markdown)) >= len(expected_defaults())
    # The one the README once had wrong: the code's default is None (the architecture's own).
    assert documented_defaults(markdown)["model.bn_momentum"] == "null"


def test_config_reference_is_generated_into_the_site() -> None:
    hook = _hook()
    site = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    assert "docs/hooks/config_reference.py" in site["hooks"]
    page = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    assert hook.MARKER in page
    assert hook.on_page_markdown(page, None, None, None) != page


@pytest.mark.parametrize("damage", ["drop a row", "change a default"])
def test_reference_check_fails_on_a_damaged_reference(damage: str) -> None:
    lines = _hook().render().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("| `model.bn_momentum`"))
    if damage == "drop a row":
        del lines[row]
        assert reference_problems("\n".join(lines)) == ["model.bn_momentum is missing"]
    else:
        lines[row] = lines[row].replace("`null`", "`0.99`")
        assert reference_problems("\n".join(lines)) == [
            "model.bn_momentum: documented default 0.99, code default null"]


# --- examples a new user can run -------------------------------------------------------------
SHARED = "../shared"
NEEDS = re.compile(r"\bneeds\b.*\b(TCIA|weights file)\b", re.S)
"""The rule: a code block naming a ``../shared`` path (this project's local copies of the Matek
images, PBC's cells and ImageNet weights, which a fresh clone lacks) must say so, in the block
or in the paragraph right above it: the word "needs" and where to get it ("TCIA" for the
images, "weights file" for the weights)."""


def unexplained_shared_paths(text: str, source: str) -> list[str]:
    """One line per code block that names ``../shared`` without saying what it needs."""
    lines, out = text.splitlines(), []
    for _lang, first, body in code_blocks(text):
        if not any(SHARED in line for line in body):
            continue
        above, j = [], first - 2  # first: the opening fence's 1-based line number
        while j >= 0 and not lines[j].strip():  # the blank line(s) before the fence
            j -= 1
        while j >= 0 and lines[j].strip():
            above.insert(0, lines[j])
            j -= 1
        if not NEEDS.search("\n".join([*above, *body])):
            out.append(f"{source}:{first}: a code block names {SHARED} without saying what it "
                       "needs (\"needs\" ... TCIA / weights file) in the paragraph above it")
    return out


def test_examples_with_local_shared_paths_say_what_they_need() -> None:
    found = []
    for path in documentation_files():
        found += unexplained_shared_paths(path.read_text(encoding="utf-8"),
                                          str(path.relative_to(REPO)))
    assert not found, "\n".join(found)


def test_shared_path_check_catches_a_bare_example() -> None:
    bare = "Train it:\n\n```bash\nhemacnn train c.yaml data.root=../shared/data/x\n```\n"
    told = bare.replace("Train it:", "This needs the Matek images (from TCIA):")
    assert unexplained_shared_paths(bare, "x.md") == [
        "x.md:3: a code block names ../shared without saying what it needs (\"needs\" ... "
        "TCIA / weights file) in the paragraph above it"]
    assert unexplained_shared_paths(told, "x.md") == []
