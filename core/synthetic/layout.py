"""Where the cells go: patchy cellularity, groups and clusters, and a bucket index for drawing tile by tile.

Laying out is cheap (positions, sizes, classes and outline parameters, O(cells)) and happens once, before any
pixel is drawn; drawing then asks the bucket index which cells touch a tile, so a slide of any size is rendered
without ever holding it in memory. Real smears are patchy, with empty glass between groups of cells, loose sheets
of squamous cells, tight syncytial clusters of high-grade cells, and inflammatory cells sprinkled among them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .cells import CELL_DTYPE, cell_radius_um, make_cell
from .classes import ABNORMAL, CLASSES, HSIL, INFLAMMATORY, INTERMEDIATE, LSIL, PARABASAL, SUPERFICIAL
from .style import SlideStyle

#: Cell groups per mm^2 where the smear is fully populated (about 350 cells per mm^2).
GROUPS_PER_MM2 = 150.0
#: Fraction of that density scattered over the rest of the preparation area.
SPRINKLE = 0.03
BUCKET = 1024  # level-0 px

# Kinds of normal epithelial group: (probability, mean number of cells)
_NORMAL_GROUPS = {"single": (0.56, 1.0), "sheet": (0.16, 4.5), "parabasal": (0.06, 3.5)}
_INFLAM_GROUP_P = 0.15
_ABNORMAL_GROUPS = {LSIL: (0.55, 1.8), HSIL: (0.45, 5.0)}


@dataclass
class Layout:
    width: int
    height: int
    mpp: float
    cells: np.ndarray  # CELL_DTYPE records
    #: Populated-ness of the smear on a coarse grid (for inspection; 0 = empty glass, 1 = fully populated).
    population: np.ndarray
    _starts: np.ndarray = field(repr=False, default=None)
    _members: np.ndarray = field(repr=False, default=None)
    _grid_w: int = 0
    _grid_h: int = 0

    def __post_init__(self) -> None:
        self._build_index()

    def _build_index(self) -> None:
        gw = max(1, math.ceil(self.width / BUCKET))
        gh = max(1, math.ceil(self.height / BUCKET))
        self._grid_w, self._grid_h = gw, gh
        n = len(self.cells)
        if n == 0:
            self._starts = np.zeros(gw * gh + 1, np.int64)
            self._members = np.zeros(0, np.int64)
            return
        bb = self.cells["bbox"]
        bx0 = np.clip(np.floor(bb[:, 0] / BUCKET), 0, gw - 1).astype(np.int64)
        by0 = np.clip(np.floor(bb[:, 1] / BUCKET), 0, gh - 1).astype(np.int64)
        bx1 = np.clip(np.floor(bb[:, 2] / BUCKET), 0, gw - 1).astype(np.int64)
        by1 = np.clip(np.floor(bb[:, 3] / BUCKET), 0, gh - 1).astype(np.int64)
        nx, ny = bx1 - bx0 + 1, by1 - by0 + 1
        counts = nx * ny
        owner = np.repeat(np.arange(n), counts)
        k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        kx = k % nx[owner]
        ky = k // nx[owner]
        bucket = (by0[owner] + ky) * gw + bx0[owner] + kx
        order = np.argsort(bucket, kind="stable")
        self._members = owner[order]
        self._starts = np.searchsorted(bucket[order], np.arange(gw * gh + 1))

    def query(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Indices (ascending) of cells whose bounding box meets the level-0 rectangle [x0, x1) x [y0, y1)."""
        gw, gh = self._grid_w, self._grid_h
        c0, c1 = max(0, int(x0 // BUCKET)), min(gw - 1, int((x1 - 1e-9) // BUCKET))
        r0, r1 = max(0, int(y0 // BUCKET)), min(gh - 1, int((y1 - 1e-9) // BUCKET))
        if c1 < c0 or r1 < r0:
            return np.zeros(0, np.int64)
        parts = []
        for r in range(r0, r1 + 1):
            a, b = self._starts[r * gw + c0], self._starts[r * gw + c1 + 1]
            if b > a:
                parts.append(self._members[a:b])
        if not parts:
            return np.zeros(0, np.int64)
        idx = np.unique(np.concatenate(parts))
        bb = self.cells["bbox"][idx]
        hit = (bb[:, 0] < x1) & (bb[:, 2] > x0) & (bb[:, 1] < y1) & (bb[:, 3] > y0)
        return idx[hit]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.cells["cls"], minlength=len(CLASSES))
        return {c.name: int(counts[c.index]) for c in CLASSES}


def make_layout(width: int, height: int, mpp: float, style: SlideStyle, rng: np.random.Generator,
                abnormal_fraction: float = 0.05, cellularity: float | None = None,
                density: float = 1.0) -> Layout:
    """Lay out a whole slide. ``cellularity`` is the share of the preparation area that is populated (random
    0.25-0.6 by default); ``density`` scales the number of cells where it is; ``abnormal_fraction`` is the
    expected share of epithelial cells that are LSIL or HSIL."""
    if not 0 <= abnormal_fraction <= 1:
        raise ValueError("abnormal_fraction must be within [0, 1]")
    px_per_um = 1.0 / mpp
    if cellularity is None:
        cellularity = float(rng.uniform(0.25, 0.6))
    population, grid = _population(width, height, mpp, cellularity, rng)
    superficial_share = float(rng.uniform(0.3, 0.7))

    area_mm2 = width * height * (mpp / 1000.0) ** 2
    lam = GROUPS_PER_MM2 * density
    n_cand = rng.poisson(lam * (1 + SPRINKLE) * area_mm2)
    xs = rng.uniform(0, width, n_cand)
    ys = rng.uniform(0, height, n_cand)
    gi = np.clip((ys / grid).astype(int), 0, population.shape[0] - 1)
    gj = np.clip((xs / grid).astype(int), 0, population.shape[1] - 1)
    accept = rng.random(n_cand) * (1 + SPRINKLE) < population[gi, gj] + SPRINKLE
    prep = _preparation(xs, ys, width, height)
    accept &= prep
    xs, ys = xs[accept], ys[accept]

    p_abn_group = _abnormal_group_probability(abnormal_fraction)
    records: list[np.void] = []
    for g, (gx, gy) in enumerate(zip(xs, ys)):
        _make_group(records, g, float(gx), float(gy), rng, style, px_per_um, superficial_share, p_abn_group)
    cells = np.array(records, dtype=CELL_DTYPE) if records else np.zeros(0, CELL_DTYPE)
    if len(cells):
        bb = cells["bbox"]
        inside = (bb[:, 0] >= 0) & (bb[:, 1] >= 0) & (bb[:, 2] <= width) & (bb[:, 3] <= height)
        cells = cells[inside]
    return Layout(width=width, height=height, mpp=mpp, cells=cells, population=population)


def _preparation(xs, ys, width, height) -> np.ndarray:
    """The preparation area: an ellipse leaving an empty margin of glass, as on a real slide scan."""
    ex = ((xs - width / 2) / (0.47 * width)) ** 2 + ((ys - height / 2) / (0.47 * height)) ** 2
    return ex <= 1.0


def _population(width: int, height: int, mpp: float, cellularity: float, rng) -> tuple[np.ndarray, float]:
    """Smooth random field thresholded so that ``cellularity`` of the preparation is populated."""
    from scipy import ndimage

    grid = 50.0 / mpp  # 50 µm grid cells
    gw, gh = max(2, math.ceil(width / grid)), max(2, math.ceil(height / grid))
    blob = rng.uniform(3.0, 7.0)  # 150-350 µm patches
    field_ = ndimage.gaussian_filter(rng.standard_normal((gh, gw)), blob, mode="reflect")
    field_ = (field_ - field_.mean()) / (field_.std() + 1e-12)
    yy, xx = np.mgrid[0:gh, 0:gw]
    prep = _preparation((xx + 0.5) * grid, (yy + 0.5) * grid, width, height)
    values = field_[prep] if prep.any() else field_.ravel()
    t = np.quantile(values, 1.0 - min(max(cellularity, 0.0), 1.0))
    pop = np.clip((field_ - t) / 0.4, 0.0, 1.0)
    pop[~prep] = 0.0
    return pop, grid


def _abnormal_group_probability(fraction: float) -> float:
    """Chance that an epithelial group is abnormal so that about ``fraction`` of epithelial cells are."""
    total = sum(p for p, _ in _NORMAL_GROUPS.values())
    m_n = sum(p * m for p, m in _NORMAL_GROUPS.values()) / total
    m_a = sum(p * m for p, m in _ABNORMAL_GROUPS.values())
    if fraction <= 0:
        return 0.0
    if fraction >= 1:
        return 1.0
    return fraction * m_n / (m_a * (1 - fraction) + fraction * m_n)


def _make_group(out: list, g: int, gx: float, gy: float, rng, style, px_per_um: float, superficial_share: float,
                p_abn: float) -> None:
    def add(cls: int, x: float, y: float, r_um: float) -> None:
        out.append(make_cell(cls, x, y, r_um, px_per_um, style, rng, g))

    def squamous_class() -> int:
        return SUPERFICIAL if rng.random() < superficial_share else INTERMEDIATE

    if rng.random() < _INFLAM_GROUP_P:
        _scatter(add, INFLAMMATORY, gx, gy, 1 + rng.poisson(4), 25.0 * px_per_um, rng)
        return
    if rng.random() < p_abn:
        cls = LSIL if rng.random() < _ABNORMAL_GROUPS[LSIL][0] else HSIL
        if cls == LSIL:
            _sheet(add, [LSIL] * (1 + rng.poisson(0.8)), gx, gy, (0.7, 1.05), px_per_um, rng)
        else:
            _sheet(add, [HSIL] * (1 + rng.poisson(4.0)), gx, gy, (0.5, 0.8), px_per_um, rng)
        return
    kinds = list(_NORMAL_GROUPS)
    probs = np.array([_NORMAL_GROUPS[k][0] for k in kinds])
    kind = kinds[rng.choice(len(kinds), p=probs / probs.sum())]
    if kind == "single":
        classes = [squamous_class()]
    elif kind == "sheet":
        classes = [squamous_class() for _ in range(2 + rng.poisson(2.5))]
    else:
        classes = [PARABASAL] * (1 + rng.poisson(2.5))
    spacing = (0.55, 1.0) if kind != "parabasal" else (0.75, 1.05)
    placed = _sheet(add, classes, gx, gy, spacing, px_per_um, rng)
    if rng.random() < 0.2:  # neutrophils sitting on squamous cells
        _scatter(add, INFLAMMATORY, gx, gy, 1 + rng.poisson(3), placed, rng)


def _sheet(add, classes: list[int], gx: float, gy: float, spacing: tuple[float, float], px_per_um: float,
           rng) -> float:
    """Grow a group by attaching each cell to a random earlier one, overlapping by ``spacing`` x radii sum.

    Returns the group's rough radius in px."""
    placed: list[tuple[float, float, float]] = []
    for cls in classes:
        r_um = cell_radius_um(cls, rng)
        r = r_um * px_per_um
        if not placed:
            x, y = gx, gy
        else:
            px, py, pr = placed[rng.integers(len(placed))]
            ang = rng.uniform(0, 2 * math.pi)
            dist = rng.uniform(*spacing) * (pr + r)
            x, y = px + dist * math.cos(ang), py + dist * math.sin(ang)
        placed.append((x, y, r))
        add(cls, x, y, r_um)
    return max(math.hypot(x - gx, y - gy) + r for x, y, r in placed)


def _scatter(add, cls: int, gx: float, gy: float, n: int, sigma: float, rng) -> None:
    for _ in range(int(n)):
        add(cls, gx + rng.normal(0, sigma), gy + rng.normal(0, sigma), cell_radius_um(cls, rng))


__all__ = ["Layout", "make_layout", "ABNORMAL"]
