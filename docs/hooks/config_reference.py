"""MkDocs hook: the configuration reference, generated from the pydantic schema at build time.

A page holding the marker line ``<!-- config-reference -->`` gets it replaced by one table per
section of :class:`hemacnn.config.Config`: every field with its type, constraints, default and
description, read from the models themselves, so the page cannot drift from the code. A field's
description is its pydantic ``description`` where it has one, else the comments the code keeps
beside the field (the comment lines just above it, a comment on its line, a docstring below it).
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from hemacnn.config import Config

MARKER = "<!-- config-reference -->"
TOP_LEVEL = "(top level)"

_BOUNDS = ((annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", "≥"),
           (annotated_types.Lt, "lt", "<"), (annotated_types.Le, "le", "≤"))


def sections() -> dict[str, type[BaseModel]]:
    """Config's sections by key: ``(top level)`` for Config itself, then each section model."""
    found: dict[str, type[BaseModel]] = {TOP_LEVEL: Config}
    for key, field in Config.model_fields.items():
        if _is_section(field):
            found[key] = field.annotation
    return found


def _is_section(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def default_value(field: FieldInfo) -> Any:
    """The default a config gets when the key is left out (a factory's value, called)."""
    return field.get_default(call_default_factory=True)


def format_default(value: Any) -> str:
    """A default as it is written in a YAML config (JSON is YAML): null, true, "keep", [..]."""
    return json.dumps(value, ensure_ascii=False)


def format_type(annotation: Any) -> str:
    """A type as the code writes it: ``int | None``, ``Literal["keep", "drop"]``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(format_type(a) for a in args)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(json.dumps(a) if isinstance(a, str) else repr(a)
                                      for a in args) + "]"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(format_type(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def format_constraints(field: FieldInfo) -> str:
    """Bounds on a number, e.g. ``> 0, < 1``; empty when there are none."""
    parts = []
    for meta in field.metadata:
        for kind, attr, sign in _BOUNDS:
            if isinstance(meta, kind):
                parts.append(f"{sign} {getattr(meta, attr)}")
    return ", ".join(parts)


def source_comments(model: type[BaseModel]) -> dict[str, str]:
    """Each field's comments in the model's source, joined into one text."""
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):  # no source (e.g. a frozen build): descriptions stay empty
        return {}
    lines = source.splitlines()
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    body = ast.parse(source).body[0].body
    texts = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, row = [], node.lineno - 1
        while row in comments and lines[row - 1].lstrip().startswith("#"):
            above.insert(0, comments[row])
            row -= 1
        inline = [comments[r] for r in range(node.lineno, node.end_lineno + 1) if r in comments]
        docstring = []
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and \
                isinstance(after.value.value, str):
            docstring = [" ".join(inspect.cleandoc(after.value.value).split())]
        texts[node.target.id] = " ".join(above + inline + docstring)
    return {name: text for name, text in texts.items() if text}


def _escape(text: str) -> str:
    """Markdown-escape a comment for a table cell, leaving its `code spans` as they are."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # even parts lie outside code spans
        for char in ("\\", "|", "*", "_", "<"):
            parts[i] = parts[i].replace(char, "\\" + char)
    return "`".join(parts)


def field_rows(model: type[BaseModel]) -> list[tuple[str, str, str, str, str]]:
    """(key, type, constraints, default, description) for every field of ``model``."""
    comments = source_comments(model)
    rows = []
    for name, field in model.model_fields.items():
        if _is_section(field):
            kind, default = "section", "see below"
        else:
            kind, default = format_type(field.annotation), format_default(default_value(field))
        rows.append((name, kind, format_constraints(field), default,
                     field.description or comments.get(name, "")))
    return rows


def render() -> str:
    """The whole reference as Markdown: one table per section."""
    out = []
    for key, model in sections().items():
        title = "Top-level keys" if key == TOP_LEVEL else f"`{key}`"
        doc = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        out += [f"## {title}", "", doc, "",
                "| key | type | constraint | default | description |",
                "|---|---|---|---|---|"]
        prefix = "" if key == TOP_LEVEL else f"{key}."
        for name, kind, bounds, default, text in field_rows(model):
            out.append(f"| `{prefix}{name}` | `{kind}` | {bounds} | `{default}` | "
                       f"{_escape(text)} |")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: fill the marker with the generated reference."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
