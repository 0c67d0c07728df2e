"""Procedural Pap-smear slides written as real pyramidal TIFFs, with every cell as ground truth in GeoJSON.

``generate_slide(path, width, height, seed)`` lays out cells (squamous, parabasal, koilocytes/LSIL, HSIL,
inflammatory; singly, in sheets and clusters, over patchy empty glass), draws the pyramid tile by tile in bounded
memory, and writes ``path`` (generic tiled TIFF, or Aperio-style SVS with label/macro/thumbnail when the name
ends in ``.svs``) and the QuPath GeoJSON beside it. The same seed gives the same files.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .classes import CLASS_NAMES, CLASSES
from .layout import Layout, make_layout
from .render import Renderer
from .style import SlideStyle, sample_style

DEFAULT_MPP = 0.25
MAX_SIDE = 2**20


@dataclass
class SyntheticSlide:
    """What ``generate_slide`` made: the files, the counts, and the look that was drawn."""

    path: str
    geojson: str | None
    width: int
    height: int
    mpp: float
    seed: int
    levels: list[tuple[int, int, int]]  # (downsample, width, height)
    cells: int
    class_counts: dict[str, int]
    abnormal_fraction: float  # realised share of epithelial cells that are LSIL/HSIL
    tiles: int
    seconds: float
    style: dict = field(default_factory=dict)

    @property
    def megapixels_per_second(self) -> float:
        total = sum(w * h for _, w, h in self.levels)
        return total / 1e6 / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["megapixels_per_second"] = self.megapixels_per_second
        return out


def build(width: int, height: int, seed: int = 0, mpp: float = DEFAULT_MPP, abnormal_fraction: float = 0.05,
          cellularity: float | None = None, density: float = 1.0,
          tile: int = 512) -> tuple[SlideStyle, Layout, Renderer]:
    """Style, layout and renderer for a slide: everything but the files (tests and previews draw from these)."""
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise ValueError(f"width and height must be within 1..{MAX_SIDE}")
    streams = np.random.SeedSequence([int(seed), 0xC3F]).spawn(3)
    style = sample_style(np.random.default_rng(streams[0]))
    layout = make_layout(width, height, mpp, style, np.random.default_rng(streams[1]), abnormal_fraction,
                         cellularity, density)
    renderer = Renderer(layout, style, np.random.default_rng(streams[2]), tile=tile)
    return style, layout, renderer


def generate_slide(
    path: str | os.PathLike,
    width: int,
    height: int,
    seed: int = 0,
    abnormal_fraction: float = 0.05,
    mpp: float = DEFAULT_MPP,
    cellularity: float | None = None,
    density: float = 1.0,
    tile: int = 512,
    quality: int = 85,
    geojson: str | os.PathLike | None | bool = True,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticSlide:
    """Write a synthetic Pap smear to ``path`` (and its ground truth to ``path`` with suffix ``.geojson``).

    ``geojson``: True for the default path, a path, or False for none. ``progress(done, total)`` is called per
    tile; raising from it aborts without leaving partial files.
    """
    from ..errors import CervixFMError
    from .geojson import write_ground_truth
    from .label import make_label
    from .writer import PyramidWriter

    path = Path(path)
    if not (0 < mpp <= 20):
        raise CervixFMError(f"mpp must be in (0, 20] µm/px, got {mpp}")
    if not 0 <= abnormal_fraction <= 1:
        raise CervixFMError(f"abnormal fraction must be between 0 and 1, got {abnormal_fraction}")
    if cellularity is not None and not 0 < cellularity <= 1:
        raise CervixFMError(f"cellularity must be in (0, 1], got {cellularity}")
    if tile % 16 or not 64 <= tile <= 4096:
        raise CervixFMError(f"tile size must be a multiple of 16 between 64 and 4096, got {tile}")
    try:
        style, layout, renderer = build(width, height, seed, mpp, abnormal_fraction, cellularity, density, tile)
    except ValueError as exc:
        raise CervixFMError(str(exc)) from exc
    start = time.perf_counter()
    aperio = path.suffix.lower() == ".svs"
    counts = layout.class_counts()
    desc = f"CervixFM synthetic Pap smear seed={seed} mpp={mpp} cells={len(layout.cells)}"
    label = make_label(["CervixFM demo", "Pap smear", f"seed {seed}"], seed) if aperio else None
    writer = PyramidWriter(renderer, width, height, mpp, tile=tile, quality=quality, workers=workers,
                           aperio=aperio, description=desc, label=label, progress=progress, seed=seed)
    tiles = writer.write(path)
    gj_path = None
    if geojson:
        gj_path = path.with_suffix(".geojson") if geojson is True else Path(geojson)
        write_ground_truth(gj_path, layout, seed)
    seconds = time.perf_counter() - start
    epithelial = sum(counts[c.name] for c in CLASSES if c.epithelial)
    abnormal = counts["LSIL"] + counts["HSIL"]
    return SyntheticSlide(
        path=str(path), geojson=str(gj_path) if gj_path else None, width=width, height=height, mpp=mpp,
        seed=seed, levels=[(lv.downsample, lv.width, lv.height) for lv in writer.levels],
        cells=len(layout.cells), class_counts=counts,
        abnormal_fraction=abnormal / epithelial if epithelial else 0.0, tiles=tiles, seconds=seconds,
        style={"background": [round(float(v), 1) for v in style.background],
               "focus_sigma_px": round(style.focus_sigma, 3), "noise_sigma": round(style.noise_sigma, 3)},
    )


__all__ = ["CLASS_NAMES", "SyntheticSlide", "build", "generate_slide"]
