"""Published per-class figures (``published.yaml``) and like-for-like checks against a run.

The numbers live in one data file with their citations; this module only loads them and says
in words how a run differs from each study (class set, dataset size, split).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class PublishedResult:
    """One study's per-class table with where it came from."""

    key: str
    short: str
    label: str
    citation: str
    where: str
    model: str
    classes: tuple[str, ...]
    dataset: str
    images: int
    split: str
    test_images: int | None
    pr_order: str
    per_class: dict[str, dict[str, Any]]
    note: str = ""
    tolerant: bool = False
    f1_derived: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def f1(self, code: str) -> float | None:
        """F1 for ``code``: as published, or 2PR/(P+R) when the source gives only P and R."""
        row = self.per_class.get(code)
        if row is None:
            return None
        if "f1" in row:
            return float(row["f1"])
        p, r = row.get("precision"), row.get("recall")
        if p is None or r is None:
            return None
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)


@lru_cache(maxsize=1)
def load_published() -> tuple[PublishedResult, ...]:
    """All published results, in file order."""
    here = resources.files("hemacnn.evaluation")
    text = here.joinpath("published.yaml").read_text(encoding="utf-8")
    known = set(PublishedResult.__dataclass_fields__) - {"extra"}
    out = []
    for src in yaml.safe_load(text)["sources"]:
        kw = {k: v for k, v in src.items() if k in known}
        kw["classes"] = tuple(kw["classes"])
        kw["note"] = (kw.get("note") or "").strip()
        kw["extra"] = {k: v for k, v in src.items() if k not in known}
        out.append(PublishedResult(**kw))
    return tuple(out)


def published_for(classes: list[str] | tuple[str, ...]) -> list[PublishedResult]:
    """Published results that report at least one of ``classes``."""
    return [p for p in load_published() if any(c in p.per_class for c in classes)]


def comparability(pub: PublishedResult, run_classes: list[str], run_images: int | None,
                  run_split: str | None = None) -> list[str]:
    """Plain-language reasons why a run and a published result are not like for like.

    Caveats about the published numbers themselves live in each source's ``note``.
    """
    reasons = []
    if sorted(run_classes) != sorted(pub.classes):
        theirs = (f"all {len(pub.classes)} Matek classes" if len(pub.classes) > 8
                  else f"{len(pub.classes)} ({', '.join(pub.classes)})")
        easier = ("; fewer classes usually make the task easier"
                  if len(run_classes) < len(pub.classes) else "")
        reasons.append(f"class set: this run {len(run_classes)} "
                       f"({', '.join(run_classes)}), the study {theirs}{easier}")
    if run_images is not None and run_images != pub.images:
        reasons.append(f"dataset: this run {run_images:,} images, the study {pub.images:,}")
    if run_split and run_split != pub.split:
        reasons.append(f"split: this run {run_split}; the study {pub.split}")
    return reasons


def published_macro_f1(pub: PublishedResult, classes: list[str] | tuple[str, ...]
                       ) -> float | None:
    """Mean published F1 over ``classes``; None unless the study reports every one of them."""
    values = [pub.f1(c) for c in classes]
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)
