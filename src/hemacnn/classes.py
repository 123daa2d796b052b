"""The Matek et al. (2021) class table: codes, full names, published counts.

Data, not logic (MedMNIST style): every other module looks classes up here.
Counts are the full dataset's, from Whitehead & Ramirez Table 1 (PAPER.md section III),
which matches the TCIA release of Matek et al. 2021 (171,374 images, 21 classes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CellClass:
    """One cell class of the Matek bone-marrow dataset."""

    code: str
    name: str
    paper_count: int


_TABLE = [
    ("ABE", "abnormal eosinophil", 8),
    ("ART", "artefact", 19_630),
    ("BAS", "basophil", 441),
    ("BLA", "blast", 11_973),
    ("EBO", "erythroblast", 27_395),
    ("EOS", "eosinophil", 5_883),
    ("FGC", "faggot cell", 47),
    ("HAC", "hairy cell", 409),
    ("KSC", "smudge cell", 42),
    ("LYI", "immature lymphocyte", 65),
    ("LYT", "lymphocyte", 26_242),
    ("MMZ", "metamyelocyte", 3_055),
    ("MON", "monocyte", 4_040),
    ("MYB", "myelocyte", 6_557),
    ("NGB", "band neutrophil", 9_968),
    ("NGS", "segmented neutrophil", 29_424),
    ("NIF", "not identifiable", 3_538),
    ("OTH", "other cell", 294),
    ("PEB", "proerythroblast", 2_740),
    ("PLM", "plasma cell", 7_629),
    ("PMO", "promyelocyte", 11_994),
]

CLASSES: dict[str, CellClass] = {code: CellClass(code, name, n) for code, name, n in _TABLE}
"""All 21 classes keyed by code, in alphabetical order."""

PAPER_TOTAL = 171_374
"""Images in the full dataset (PAPER.md section III)."""

PAPER_CLASSES: tuple[str, ...] = ("BLA", "LYT", "NGB", "NGS")
"""The four classes Whitehead & Ramirez kept (section III); the default selection."""

MATEK_IMAGE_SIZE = (250, 250)
"""Width and height of every image in the Matek download."""

assert sum(c.paper_count for c in CLASSES.values()) == PAPER_TOTAL  # table sanity, not input


OTHER_CODE = "OTHER"
"""The pooled class of every unselected cell type (``imbalance.other``); not Matek's OTH."""

MATEK_TABLE = "Matek et al. 2021"
"""What a model card's ``class_table`` says when its classes are Matek's codes."""

POOLED_CODES = frozenset({OTHER_CODE})
"""Catch-all classes a model may add on top of a dataset's own (they never decide the table)."""


def is_matek_set(codes: Iterable[str]) -> bool:
    """True when every code (apart from a pooled catch-all) is one of Matek's 21 codes.

    Anything Matek-specific (full names, tolerance groups, published comparisons) is used only
    for such class sets: a folder with ``neutrophil/`` or with ``LYT/`` beside ``neutrophil/`` is
    somebody else's dataset, and a code there means what its owner meant by it.
    """
    own = [c for c in codes if c not in POOLED_CODES]
    return bool(own) and all(c in CLASSES for c in own)


def class_name(code: str, matek: bool = True) -> str:
    """Full name for a Matek code (when ``matek``), else the code itself."""
    if code == OTHER_CODE:
        return "any other class (pooled)"
    info = CLASSES.get(code) if matek else None
    return info.name if info else code


def class_names(codes: Sequence[str]) -> list[str]:
    """Display names for a class set: Matek's names for a Matek set, else the codes themselves."""
    matek = is_matek_set(codes)
    return [class_name(c, matek) for c in codes]


# --- Tolerance groups (tolerant evaluation) -------------------------------------------------
# Matek et al. 2021 (Blood 138(20):1917-1927, doi 10.1182/blood.2020010568), Table 1, report
# "tolerant" precision and recall beside the strict ones, after Krappe et al. (2016): a
# prediction into a morphologically neighbouring class counts as correct. The paper text that
# lists the groups was not in any source we could reach, so the groups below are inferred from
# that table (http://ashpublications.net/view-large/10296123): tolerant and strict figures differ
# exactly for NGB, NGS, LYT, MMZ, MYB, PMO, BLA, PEB, EBO, HAC and LYI, and are identical for
# every other class. Pairs: band <-> segmented neutrophil; adjacent myeloid maturation stages
# (promyelocyte <-> myelocyte <-> metamyelocyte); proerythroblast <-> erythroblast; hairy cell
# and immature lymphocyte with lymphocyte and blast. Tolerance is taken as symmetric. Not
# included (uncertain): MMZ <-> NGB and BLA <-> PMO, which are also maturation neighbours.
_TOLERANT_PAIRS = [
    ("NGB", "NGS"),
    ("PMO", "MYB"),
    ("MYB", "MMZ"),
    ("PEB", "EBO"),
    ("HAC", "LYT"),
    ("HAC", "BLA"),
    ("LYI", "LYT"),
    ("LYI", "BLA"),
]

TOLERANCE_GROUPS: dict[str, frozenset[str]] = {
    code: frozenset({code}
                    | {b for a, b in _TOLERANT_PAIRS if a == code}
                    | {a for a, b in _TOLERANT_PAIRS if b == code})
    for code in CLASSES
}
"""Class code -> codes whose prediction counts as tolerant-correct (always includes itself)."""


def tolerance_groups(codes: Sequence[str]) -> dict[str, frozenset[str]]:
    """Matek's tolerance groups restricted to ``codes``; none for a non-Matek class set."""
    if not is_matek_set(codes):
        return {}
    chosen = set(codes)
    return {c: TOLERANCE_GROUPS[c] & chosen for c in codes if c in TOLERANCE_GROUPS}
