"""What a cell detector returns, and the interface every detector implements.

The classical detector (``localise.ClassicalCellDetector``) needs no training data; learned detection or
segmentation heads (YOLOF boxes, Mask2Former instance masks) plug in behind the same ``CellDetector.detect``:
the tiling, the border rule, the crops, the embeddings and every output downstream stay the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np


@dataclasses.dataclass(frozen=True)
class TileFrame:
    """Where a tile's pixels lie on the slide, and what the detector may know about the slide.

    Tile pixel (col, row) covers level-0 ``[x0 + col * dx, x0 + (col + 1) * dx)`` (same for y), so its centre is at
    ``x0 + (col + 0.5) * dx``.
    """

    x0: float
    y0: float
    downsample: tuple[float, float]  # level-0 px per tile px (x, y)
    mpp: float  # µm per tile px
    background: tuple[float, float, float] | None = None  # the slide's glass colour, when known

    def to_level0(self, cols, rows) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 (x, y) of tile-pixel coordinates given as pixel-centre-based ``(col, row)`` (pixel centre = i)."""
        dx, dy = self.downsample
        return (self.x0 + (np.asarray(cols, np.float64) + 0.5) * dx,
                self.y0 + (np.asarray(rows, np.float64) + 0.5) * dy)


@dataclasses.dataclass
class Cell:
    """One cell in level-0 pixels: outline, nucleus outline, nucleus centre and measurements (QuPath names)."""

    polygon: Any  # shapely Polygon
    nucleus: Any  # shapely Polygon
    centre: tuple[float, float]  # the nucleus centre: what "centred on the cell" means for crops
    measurements: dict[str, float] = dataclasses.field(default_factory=dict)
    score: float = 1.0  # detector confidence (1 for the classical detector)
    label: str | None = None  # a class from a detector that also classifies; None otherwise
    #: The outline reached the edge of the pixels the detector saw, so it may be cut off.
    truncated: bool = False


@runtime_checkable
class CellDetector(Protocol):
    """Finds cells in one RGB tile. Must be safe to call from several threads at once."""

    name: str

    def params(self) -> Mapping[str, Any]:
        """Everything that changes the output: recorded in results and used to decide whether work can be reused."""

    def context_um(self) -> float:
        """How far (µm) a cell reaches from its nucleus centre: the margin tiles are read with."""

    def detect(self, tile: np.ndarray, frame: TileFrame) -> list[Cell]:
        """Cells whose nucleus lies in ``tile`` (H, W, 3 uint8 RGB), in level-0 coordinates."""
