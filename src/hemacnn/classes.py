"""The Matek et al. (2021) class table: codes, full names, published counts.

Data, not logic (MedMNIST style): every other module looks classes up here.
Counts are the full dataset's, from Whitehead & Ramirez Table 1 (PAPER.md section III),
which matches the TCIA release of Matek et al. 2021 (171,374 images, 21 classes).
"""

from __future__ import annotations

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


def class_name(code: str) -> str:
    """Full name for a class code, or the code itself for classes outside the Matek table."""
    info = CLASSES.get(code)
    return info.name if info else code
