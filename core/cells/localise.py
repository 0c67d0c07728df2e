"""Cells and nuclei of a tile with scikit-image alone: no training data, no model.

1. Optical density relative to the slide's glass colour; colour deconvolution gives the haematoxylin density.
2. Nuclei: haematoxylin above a threshold, specks removed, touching nuclei split by a watershed on the distance
   transform seeded by its h-maxima (one seed per roundish body, not one per bump of a lobed neutrophil nucleus).
3. Cells: everything stained (OD above a low threshold, small holes such as koilocyte halos filled), grown from the
   nuclei as seeds by a watershed on the OD gradient, so touching and overlapping cells split along their visible
   borders, and never farther than a cell can reach from its nucleus.
4. Outlines as level-0 polygons and measurements in µm (areas, nucleus-to-cytoplasm ratios, nuclear darkness and
   texture, nuclear shape).

All parameters are physical (µm, OD), so the same settings work at any scan resolution; the tile is analysed at
whatever MPP it was read at (0.5 µm/px by default, see ``merge.LocalisationTiles``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from .cell import Cell, TileFrame
from .polygons import label_polygons
from .stains import StainMatrix, haematoxylin, optical_density


@dataclasses.dataclass(frozen=True)
class LocaliseOptions:
    #: Haematoxylin density above which a pixel is nucleus.
    nucleus_threshold: float = 0.45
    #: Morphological opening of the nucleus mask (removes spurs, but cuts the thin necks of lobed nuclei).
    open_nuclei: bool = False
    #: Smallest nucleus kept, µm^2 (a pyknotic superficial nucleus is about 12 µm^2).
    min_nucleus_um2: float = 5.0
    #: Smallest mean haematoxylin density of a nucleus (real nuclei are 1-3; leaks from dense cytoplasm barely
    #: pass the threshold).
    min_nucleus_od: float = 0.55
    #: Largest nucleus kept, µm^2; bigger dark areas are clumps or debris, not one nucleus.
    max_nucleus_um2: float = 600.0
    #: A nucleus's outline sits where its haematoxylin falls to this share of its mean (0: at the threshold).
    edge_fraction: float = 0.6
    #: Depth of a distance-transform maximum (µm) that makes a separate nucleus.
    split_depth_um: float = 0.3
    #: Two touching dark bodies are two nuclei only if their shared border is shorter than this share of the
    #: smaller one's diameter (the lobes of a neutrophil nucleus meet along wide necks).
    max_neck: float = 0.7
    #: Only bodies up to this size (µm^2) are candidates for one lobed nucleus; bigger ones are overlapping nuclei
    #: (a neutrophil nucleus is under 60 µm^2, a high-grade one 100-250 µm^2).
    max_lobed_um2: float = 150.0
    #: OD (max over channels) above which a pixel is stained at all.
    cytoplasm_threshold: float = 0.05
    #: Enclosed unstained areas up to this size (µm^2) belong to the cell (koilocyte halos).
    max_hole_um2: float = 1200.0
    #: How far a cell reaches beyond the edge of its nucleus, µm (large superficial cells about 45 µm).
    max_cell_radius_um: float = 50.0
    #: Gaussian smoothing before thresholding, µm.
    smooth_um: float = 0.5
    #: Width of the ring around each nucleus whose gradient is ignored when growing cells, µm.
    nucleus_halo_um: float = 1.0
    #: Width of the ring around an enclosed unstained hole (a koilocyte's halo) flattened like the nucleus halo, µm.
    hole_rim_um: float = 5.0
    #: A cell's outline drops pixels stained less than this share of the cell's mean (0: keep the threshold's).
    cell_edge_fraction: float = 0.5
    #: Weight (per µm of depth inside the stained area) of cell shape against image edges when growing cells.
    shape_weight: float = 0.0
    #: Compactness of the cell watershed (0: follow the image's edges only; higher favours round cells, which on
    #: synthetic smears lost more touching cells than it saved).
    compactness: float = 0.0
    stains: StainMatrix = StainMatrix()

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stains"] = {k: list(v) for k, v in out["stains"].items()}
        return out


class ClassicalCellDetector:
    """Threshold + watershed localisation (see the module docstring). Stateless, so thread-safe."""

    name = "classical"

    def __init__(self, options: LocaliseOptions | None = None):
        self.options = options or LocaliseOptions()

    def params(self) -> Mapping[str, Any]:
        return {"detector": self.name, **self.options.to_dict()}

    def context_um(self) -> float:
        """A cell reaches ``max_cell_radius_um`` beyond its nucleus's edge, the nucleus up to its own radius."""
        return self.options.max_cell_radius_um + math.sqrt(self.options.max_nucleus_um2 / math.pi)

    def detect(self, tile: np.ndarray, frame: TileFrame) -> list[Cell]:
        background = frame.background if frame.background is not None else glass_colour(tile)
        od = optical_density(tile, background)
        nuclei, cells, h = segment(od, frame.mpp, self.options)
        return cells_from_labels(nuclei, cells, od, h, frame)


def glass_colour(tile: np.ndarray) -> tuple[float, float, float]:
    """Median colour of the brightest tenth of the tile: the glass, unless the tile is full of cells."""
    px = tile.reshape(-1, 3)
    lum = px.astype(np.int32).sum(axis=1)
    bright = px[lum >= np.percentile(lum, 90)]
    return tuple(float(v) for v in np.median(bright, axis=0))


def segment(od: np.ndarray, mpp: float, opts: LocaliseOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nucleus labels, cell labels, haematoxylin density); cell k is grown from nucleus k."""
    h = haematoxylin(od, opts.stains)
    sigma = opts.smooth_um / mpp
    if sigma > 0.3:
        h = ndimage.gaussian_filter(h, sigma)
    seeds = find_nuclei(h, mpp, opts)
    cells = grow_cells(od, seeds, mpp, opts)
    return nucleus_outlines(seeds, h, opts.edge_fraction), cells, h


def channel_max(od: np.ndarray) -> np.ndarray:
    """Max over the colour channels (elementwise on the planes: several times faster than ``max(axis=2)``)."""
    return np.maximum(np.maximum(od[..., 0], od[..., 1]), od[..., 2])


def channel_sum(od: np.ndarray) -> np.ndarray:
    return od[..., 0] + od[..., 1] + od[..., 2]


def find_nuclei(h: np.ndarray, mpp: float, opts: LocaliseOptions) -> np.ndarray:
    """Nucleus labels: thresholded haematoxylin, each dark body split into its nuclei.

    Splitting works component by component on its own bounding box: nuclei cover a few percent of a tile, so
    this is far cheaper than a distance transform and a morphological reconstruction of the whole tile.
    """
    px_area = mpp * mpp
    mask = h > opts.nucleus_threshold
    if opts.open_nuclei:
        mask = ndimage.binary_opening(mask)
    labels, n = ndimage.label(mask)
    out = np.zeros(labels.shape, np.int32)
    if n == 0:
        return out
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=n + 1) * px_area
    if opts.min_nucleus_od > 0:  # pale specks where folded or stacked cytoplasm leaks into the haematoxylin channel
        mean_h = np.bincount(flat, h.ravel(), n + 1) / np.maximum(areas / px_area, 1)
        areas[mean_h < opts.min_nucleus_od] = -1.0
    min_px = opts.min_nucleus_um2 / px_area
    max_px = opts.max_nucleus_um2 / px_area
    merge_px = opts.max_lobed_um2 / px_area
    depth = opts.split_depth_um / mpp
    next_id = 1
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or areas[k] < opts.min_nucleus_um2:
            continue
        sl = _grow_slice(sl, 1, labels.shape)
        body = ndimage.binary_fill_holes(labels[sl] == k)
        parts = split_touching(body, depth, min_px, opts.max_neck, merge_px)
        sizes = np.bincount(parts.ravel())
        parts[(sizes > max_px)[parts] & (parts > 0)] = 0  # dark debris, not a nucleus
        parts = _relabel(parts)
        view = out[sl]
        view[parts > 0] = parts[parts > 0] + (next_id - 1)
        next_id += int(parts.max())
    return out


def nucleus_outlines(nuclei: np.ndarray, h: np.ndarray, fraction: float) -> np.ndarray:
    """Each nucleus cut down to the pixels at least ``fraction`` as dark as its mean (same labels).

    The detection threshold sits low on a nucleus's blurred edge, so thresholded nuclei come out a pixel or two too
    wide (half again the area of a lymphocyte nucleus). They stay the seeds cells are grown from; the outline and
    the measurements use an edge relative to the nucleus's own darkness, which is where the edge is for a pale and
    a dark nucleus alike. (The mean, not the maximum: where nuclei overlap their densities add.)
    """
    n = int(nuclei.max())
    if n == 0 or fraction <= 0:
        return nuclei
    flat = nuclei.ravel()
    count = np.bincount(flat, minlength=n + 1)
    mean = (np.bincount(flat, h.ravel(), n + 1) / np.maximum(count, 1)).astype(np.float32)
    inside = nuclei > 0
    keep = inside & (h >= fraction * mean[nuclei])
    keep = ndimage.binary_fill_holes(keep) & inside
    return np.where(keep, nuclei, 0)


def split_touching(body: np.ndarray, depth_px: float, min_px: float, max_neck: float = 0.7,
                   max_lobed_px: float = np.inf) -> np.ndarray:
    """Labels of the nuclei in one connected dark body.

    Candidate parts come from a watershed of the distance transform seeded at its h-maxima; two parts no bigger
    together than ``max_lobed_px`` stay separate only where they meet along a neck narrower than ``max_neck`` times
    the smaller part's diameter. Two round nuclei touching have a short shared border; the lobes of one neutrophil
    nucleus meet along a wide one. Bigger bodies (the overlapping nuclei of a high-grade cluster) keep every part.
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    single = body.astype(np.int32)
    if body.sum() < 2 * min_px or depth_px <= 0:
        return single
    dist = ndimage.distance_transform_edt(body)
    seeds, n = ndimage.label(h_maxima(dist, depth_px) & body)
    if n <= 1:
        return single
    parts = watershed(-dist, seeds, mask=body)
    parts = merge_wide_necks(parts, max_neck, max_lobed_px)
    sizes = np.bincount(parts.ravel())
    small = np.flatnonzero(sizes < min_px)
    small = small[(small > 0) & (sizes[small] > 0)]
    if len(small):  # a sliver from the split, not a nucleus: give it back to its neighbours
        seeds = parts.copy()
        seeds[np.isin(seeds, small)] = 0
        parts = watershed(-dist, seeds, mask=body)
    return _relabel(parts)


def merge_wide_necks(parts: np.ndarray, max_neck: float, max_merged_px: float = np.inf) -> np.ndarray:
    """Merge adjacent parts whose shared border is longer than ``max_neck`` x the smaller one's diameter, as long
    as the merged part stays within ``max_merged_px``."""
    parts = parts.copy()
    while True:
        borders: dict[tuple[int, int], int] = {}
        for a, b in ((parts[:, :-1], parts[:, 1:]), (parts[:-1, :], parts[1:, :])):
            touch = (a != b) & (a > 0) & (b > 0)
            if touch.any():
                lo, hi = np.minimum(a[touch], b[touch]), np.maximum(a[touch], b[touch])
                for pair, count in zip(*np.unique(np.stack([lo, hi], 1), axis=0, return_counts=True)):
                    borders[(int(pair[0]), int(pair[1]))] = borders.get((int(pair[0]), int(pair[1])), 0) + int(count)
        if not borders:
            return parts
        sizes = np.bincount(parts.ravel())
        ratio = {pair: n / (2.0 * np.sqrt(min(sizes[pair[0]], sizes[pair[1]]) / np.pi))
                 for pair, n in borders.items() if sizes[pair[0]] + sizes[pair[1]] <= max_merged_px}
        if not ratio:
            return parts
        worst = max(ratio, key=ratio.get)
        if ratio[worst] <= max_neck:
            return parts
        parts[parts == worst[1]] = worst[0]


def _grow_slice(sl: tuple[slice, slice], pad: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    return tuple(slice(max(0, s.start - pad), min(n, s.stop + pad)) for s, n in zip(sl, shape))


def grow_cells(od: np.ndarray, nuclei: np.ndarray, mpp: float, opts: LocaliseOptions) -> np.ndarray:
    from skimage.filters import sobel
    from skimage.morphology import remove_small_holes
    from skimage.segmentation import watershed

    in_nucleus = nuclei > 0
    if not in_nucleus.any():
        return np.zeros_like(nuclei)
    sigma = max(opts.smooth_um / mpp, 0.5)
    stained = ndimage.gaussian_filter(channel_max(od), sigma)
    stained_mask = stained > opts.cytoplasm_threshold
    stained_mask |= in_nucleus
    mask = remove_small_holes(stained_mask, max_size=max(1, int(opts.max_hole_um2 / (mpp * mpp))))
    mask &= near(in_nucleus, opts.max_cell_radius_um / mpp)
    elevation = sobel(ndimage.gaussian_filter(channel_sum(od), sigma))
    if opts.shape_weight > 0:
        # Deep inside the stained area floods first, narrow necks last: two cells touching at a point split
        # there even when a koilocyte's halo rim walls its own nucleus in.
        elevation -= np.float32(opts.shape_weight * mpp) * ndimage.distance_transform_edt(mask).astype(np.float32)
    # The nucleus's own edge is the strongest gradient around a seed: flattened, every cell floods its own
    # cytoplasm first instead of a neighbour reaching it round the back.
    halo = max(1, int(round(opts.nucleus_halo_um / mpp)))
    elevation[ndimage.binary_dilation(in_nucleus, iterations=halo)] = 0.0
    if opts.hole_rim_um > 0:
        # Likewise the clear halo of a koilocyte and the condensed rim around it: they belong to the cell inside.
        holes = mask & ~stained_mask
        if holes.any():
            rim = max(1, int(round(opts.hole_rim_um / mpp)))
            elevation[ndimage.binary_dilation(holes, iterations=rim)] = 0.0
    cells = watershed(elevation, markers=nuclei, mask=mask, compactness=opts.compactness)
    if opts.cell_edge_fraction > 0:
        cells = trim_cell_edges(cells, stained, mask & ~stained_mask, in_nucleus, opts.cell_edge_fraction)
    return cells


def trim_cell_edges(cells: np.ndarray, stained: np.ndarray, holes: np.ndarray, in_nucleus: np.ndarray,
                    fraction: float) -> np.ndarray:
    """Drop each cell's pixels stained less than ``fraction`` of the cell's mean: the low part of its blurred
    edge, which the (low, fixed) stain threshold lets in. Nuclei and enclosed halos stay."""
    n = int(cells.max())
    if n == 0:
        return cells
    flat = np.where(in_nucleus, 0, cells).ravel()  # the cytoplasm's mean: a dense nucleus would raise it
    count = np.bincount(flat, minlength=n + 1)
    mean = np.bincount(flat, stained.ravel(), n + 1) / np.maximum(count, 1)
    keep = (cells > 0) & ((stained >= fraction * mean[cells]) | holes | in_nucleus)
    keep = ndimage.binary_fill_holes(keep) & (cells > 0)
    return np.where(keep, cells, 0)


def near(mask: np.ndarray, radius_px: float, block: int = 4) -> np.ndarray:
    """Pixels within about ``radius_px`` of ``mask``, from a distance transform at 1/``block`` resolution.

    The reach of a cell is a loose physical bound, so a few pixels of slack buy a 16x cheaper distance transform.
    """
    h, w = mask.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.zeros((hb * block, wb * block), bool)
    padded[:h, :w] = mask
    coarse = padded.reshape(hb, block, wb, block).any(axis=(1, 3))
    dist = ndimage.distance_transform_edt(~coarse)
    close = dist <= radius_px / block + 1.0
    return np.repeat(np.repeat(close, block, axis=0), block, axis=1)[:h, :w]


def _relabel(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, labels.dtype)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=labels.dtype)
    return lut[labels]


def cells_from_labels(nuclei: np.ndarray, cells: np.ndarray, od: np.ndarray, h: np.ndarray,
                      frame: TileFrame) -> list[Cell]:
    """Polygons and measurements of every cell grown from a nucleus.

    Per-label statistics are weighted bincounts: one pass over the nuclear pixels and one over the tile, instead of
    one scipy.ndimage pass over the whole tile per statistic.
    """
    n = int(nuclei.max())
    if n == 0:
        return []
    px_um2 = frame.mpp * frame.mpp
    at = np.flatnonzero(nuclei.ravel())
    lab = nuclei.ravel()[at]
    hv = h.ravel()[at].astype(np.float64)
    rows, cols = np.divmod(at, nuclei.shape[1])
    nuc_px = np.bincount(lab, minlength=n + 1).astype(np.float64)
    safe = np.maximum(nuc_px, 1.0)
    h_mean = np.bincount(lab, hv, n + 1) / safe
    h_std = np.sqrt(np.maximum(np.bincount(lab, hv * hv, n + 1) / safe - h_mean ** 2, 0.0))
    centre_r = np.bincount(lab, rows, n + 1) / safe
    centre_c = np.bincount(lab, cols, n + 1) / safe
    flat_cells = cells.ravel()
    cell_px = np.bincount(flat_cells, minlength=n + 1).astype(np.float64)
    od_sum = channel_sum(od).ravel()
    cyto_od_total = np.bincount(flat_cells, od_sum, n + 1) - np.bincount(lab, od_sum[at], n + 1)
    cyto_px = cell_px - nuc_px
    edge = np.zeros(n + 1, bool)
    for border in (cells[0], cells[-1], cells[:, 0], cells[:, -1]):
        edge[border] = True
    nuc_polys = label_polygons(nuclei, frame)
    cell_polys = label_polygons(cells, frame)
    cx, cy = frame.to_level0(centre_c, centre_r)
    out: list[Cell] = []
    for k in range(1, n + 1):
        npoly, cpoly = nuc_polys.get(k), cell_polys.get(k)
        if npoly is None or cpoly is None:
            continue
        a_nuc, a_cell = nuc_px[k] * px_um2, max(cell_px[k], nuc_px[k]) * px_um2
        a_cyto = max(a_cell - a_nuc, 0.0)
        perimeter_um = npoly.length / max(frame.downsample) * frame.mpp
        out.append(Cell(
            polygon=cpoly, nucleus=npoly, centre=(float(cx[k]), float(cy[k])), truncated=bool(edge[k]),
            measurements={
                "Cell: Area µm^2": round(a_cell, 2),
                "Nucleus: Area µm^2": round(a_nuc, 2),
                "Cytoplasm: Area µm^2": round(a_cyto, 2),
                "Cell: Nucleus/Cell area ratio": round(a_nuc / a_cell, 4) if a_cell else 0.0,
                "Cell: Nucleus/Cytoplasm area ratio": round(a_nuc / max(a_cyto, px_um2), 4),
                "Nucleus: Haematoxylin OD mean": round(float(h_mean[k]), 4),
                "Nucleus: Haematoxylin OD std dev": round(float(h_std[k]), 4),
                "Nucleus: Circularity": round(min(1.0, 4 * math.pi * a_nuc / perimeter_um ** 2), 4)
                if perimeter_um > 0 else 0.0,
                "Cytoplasm: OD mean": round(float(cyto_od_total[k] / cyto_px[k]), 4) if cyto_px[k] > 0 else 0.0,
            },
        ))
    return out
