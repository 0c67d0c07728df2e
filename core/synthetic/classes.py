"""The cell classes drawn on synthetic Pap smears, with the colours QuPath shows them in.

Names follow cytology usage (Bethesda for the abnormal squamous lesions) so a ground-truth GeoJSON reads naturally
next to a pathologist's own annotations.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CellClass:
    index: int
    name: str
    color: tuple[int, int, int]
    #: The Bethesda category the cell argues for on its own.
    bethesda: str
    epithelial: bool


SUPERFICIAL, INTERMEDIATE, PARABASAL, LSIL, HSIL, INFLAMMATORY = range(6)

CLASSES: tuple[CellClass, ...] = (
    CellClass(SUPERFICIAL, "Superficial squamous", (232, 120, 150), "NILM", True),
    CellClass(INTERMEDIATE, "Intermediate squamous", (70, 170, 190), "NILM", True),
    CellClass(PARABASAL, "Parabasal", (40, 100, 190), "NILM", True),
    CellClass(LSIL, "LSIL", (250, 165, 20), "LSIL", True),
    CellClass(HSIL, "HSIL", (215, 30, 30), "HSIL", True),
    CellClass(INFLAMMATORY, "Inflammatory", (140, 90, 200), "NILM", False),
)

CLASS_NAMES = tuple(c.name for c in CLASSES)
ABNORMAL = frozenset({LSIL, HSIL})
