"""What a model card must hold, without pydantic: the committed JSON schema, its checker, the
card's fixed texts and the rules between fields that a schema cannot state.

``model_card.schema.json`` (beside this file) is ``ModelCard.model_json_schema()``
(:mod:`hemacnn.card.model`); a test keeps the two equal. Readers check a card against the file
with :func:`first_problem`, so that a one-image ``predict`` never imports pydantic (~100 ms of
start-up: import and model build, measured on this 2-core CPU). The checker knows the JSON-schema
keywords pydantic writes for this model (:data:`KEYWORDS`); a test fails when the schema uses
another, so no part of it goes unchecked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

CARD_FORMAT = "hemacnn-card/2"
FORMAT_PREFIX = "hemacnn-card/"
SCHEMA_FILE = Path(__file__).with_name("model_card.schema.json")

INTENDED_USE = (
    "Research use: sorting single-cell images from stained bone-marrow (or blood) smears into "
    "this card's classes, for images like the training images (dataset, source_images, "
    "colour_stats). Not a medical device and not a diagnosis: a qualified person reviews every "
    "result.")

MATEK_DATASET = {
    "name": "Bone marrow cytomorphology (Matek et al. 2021)",
    "citation": "Matek C, Krappe S, Münzenmayer C, Haferlach T, Marr C. An Expert-Annotated "
                "Dataset of Bone Marrow Cytology in Hematologic Malignancies [Data set]. The "
                "Cancer Imaging Archive, 2021. doi:10.7937/TCIA.AXH3-T579",
    "publisher": "The Cancer Imaging Archive (TCIA)",
    "url": "https://doi.org/10.7937/TCIA.AXH3-T579",
    "licence": "CC BY 4.0",
    "licence_url": "https://creativecommons.org/licenses/by/4.0/",
}
"""The dataset of a model whose classes are Matek's codes (as class names and published
comparisons assume); as ``demo/data/README.md`` cites it."""

# The JSON-schema keywords the checker enforces, and those that only annotate.
KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "items",
                      "anyOf", "$ref", "enum", "const", "minimum", "minItems", "maxItems"})
ANNOTATIONS = frozenset({"title", "description", "default", "$defs"})

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,),
    "number": (int, float), "boolean": (bool,), "null": (type(None),)}
_WORDS = {"object": "an object", "array": "a list", "string": "a string",
          "integer": "a whole number", "number": "a number", "boolean": "true or false",
          "null": "null"}


@cache
def card_schema() -> dict[str, Any]:
    """The committed JSON schema of a model card."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def outputs_entry(arch_name: str) -> dict[str, str]:
    """The card's ``outputs`` entry: an ensemble returns log-probabilities, a network logits."""
    return {"raw": "log_probabilities" if arch_name == "ensemble" else "logits",
            "probabilities": "softmax", "order": "classes"}


def consistency_problem(card: Mapping[str, Any]) -> str | None:
    """What disagrees between a card's fields (a schema checks each field alone), or None."""
    classes = card["classes"]
    if len(set(classes)) != len(classes):
        return "field 'classes' names a class twice"
    if len(card["class_names"]) != len(classes):
        return (f"field 'class_names' should hold one name per class ({len(classes)}), not "
                f"{len(card['class_names'])}")
    if card["arch"]["num_classes"] != len(classes):
        return (f"field 'arch.num_classes' is {card['arch']['num_classes']} for "
                f"{len(classes)} classes")
    return None


def first_problem(card: Any) -> str | None:
    """The first way ``card`` breaks the schema or the rules between fields, or None."""
    schema = card_schema()
    problem = _check(card, schema, schema, "")
    return problem if problem is not None else consistency_problem(card)


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


def _field(path: str) -> str:
    return f"field '{path}'" if path else "the card"


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False  # JSON's true is not 1
    return isinstance(value, _TYPES[kind])


def _check(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any],
           path: str) -> str | None:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return _check(value, root["$defs"][name], root, path)
    if "anyOf" in schema:
        problems = [_check(value, s, root, path) for s in schema["anyOf"]]
        if None in problems:
            return None
        # The branch of the value's own JSON type says most (a bad list, not "not null").
        fitting = [p for s, p in zip(schema["anyOf"], problems, strict=True)
                   if "type" not in s or _is(value, s["type"])]
        return (fitting or problems)[0]
    kind = schema.get("type")
    if kind is not None and not _is(value, kind):
        return f"{_field(path)} should be {_WORDS[kind]}, not {_shown(value)}"
    if "const" in schema and value != schema["const"]:
        return f"{_field(path)} should be {_shown(schema['const'])}, not {_shown(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return (f"{_field(path)} should be one of {', '.join(map(_shown, schema['enum']))}, "
                f"not {_shown(value)}")
    if "minimum" in schema and value < schema["minimum"]:
        return f"{_field(path)} should be at least {schema['minimum']}, not {_shown(value)}"
    if kind == "array":
        return _check_array(value, schema, root, path)
    if kind == "object":
        return _check_object(value, schema, root, path)
    return None


def _check_array(value: list, schema: Mapping[str, Any], root: Mapping[str, Any],
                 path: str) -> str | None:
    low, high = schema.get("minItems", 0), schema.get("maxItems", len(value))
    if not low <= len(value) <= high:
        want = str(low) if low == high else f"at least {low}" if len(value) < low else \
            f"at most {high}"
        return f"{_field(path)} should hold {want} items, not {len(value)}"
    for i, item in enumerate(value):
        problem = _check(item, schema.get("items", {}), root, f"{path}[{i}]")
        if problem is not None:
            return problem
    return None


def _check_object(value: dict, schema: Mapping[str, Any], root: Mapping[str, Any],
                  path: str) -> str | None:
    props = schema.get("properties", {})
    prefix = f"{path}." if path else ""
    for name in schema.get("required", ()):
        if name not in value:
            return f"{_field(prefix + name)} is missing"
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in props:
            problem = _check(item, props[name], root, prefix + name)
        elif extra is False:
            return f"{_field(prefix + str(name))} is not a model card field"
        else:
            problem = _check(item, extra, root, prefix + str(name)) if extra is not True else None
        if problem is not None:
            return problem
    return None
