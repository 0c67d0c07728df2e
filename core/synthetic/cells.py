"""What each kind of cell looks like, and how one cell is painted into a tile.

Sizes are in microns (converted with the slide's MPP) and follow textbook cytology: superficial squamous cells
are large flat polygons (45-60 µm) with pink/orange cytoplasm and a small pyknotic nucleus; intermediate cells
are slightly smaller, blue-green, with a vesicular nucleus; parabasal cells are round, 15-25 µm, with dense
cytoplasm. The abnormal classes carry their defining features: a koilocyte (LSIL) has an enlarged, dark, wrinkled
nucleus inside a sharply outlined perinuclear halo with condensed cytoplasm at its rim; an HSIL cell is small with
a high nucleus-to-cytoplasm ratio and a dark, irregular, coarse-chromatin nucleus. Neutrophils have lobed nuclei,
lymphocytes a round dark nucleus with a thin rim of cytoplasm.
"""

from __future__ import annotations

import math

import numpy as np

from .classes import HSIL, INFLAMMATORY, INTERMEDIATE, LSIL, PARABASAL, SUPERFICIAL
from .shapes import MAX_EDGES, N_HARM, Outline, distance_at, polygon, radius_table, shape_fields
from .style import SlideStyle

CELL_DTYPE = np.dtype([
    ("cls", "i4"), ("group", "i4"),
    *shape_fields("c_"), *shape_fields("n_"), *shape_fields("h_"),
    ("cyto_od", "f4", (3,)), ("cyto_tex", "f4"), ("rim", "f4"), ("halo_rim", "f4"),
    ("fold", "f4"), ("fold_ang", "f4"), ("fold_off", "f4"),
    ("nuc_od", "f4", (3,)), ("nuc_tex", "f4"), ("nuc_coarse", "f4"), ("nuc_rim", "f4"),
    ("bbox", "f8", (4,)), ("mass", "f4", (3,)),
])

#: Equivalent-circle radius range of the whole cell per class, µm.
CELL_RADIUS_UM = {
    SUPERFICIAL: (22.0, 29.0),
    INTERMEDIATE: (18.0, 25.0),
    PARABASAL: (8.0, 12.0),
    LSIL: (19.0, 26.0),
    HSIL: (7.5, 11.0),
    INFLAMMATORY: (4.2, 6.5),
}


def cell_radius_um(cls: int, rng: np.random.Generator) -> float:
    lo, hi = CELL_RADIUS_UM[cls]
    return float(rng.uniform(lo, hi))


def _set_outline(rec, prefix: str, rng: np.random.Generator, x: float, y: float, r: float, aspect: float,
                 nedge: int = 0, edge_jitter: float = 0.0, harm: dict[int, float] | None = None) -> None:
    rec[prefix + "x"] = x
    rec[prefix + "y"] = y
    rec[prefix + "r"] = r
    rec[prefix + "aspect"] = aspect
    rec[prefix + "rot"] = rng.uniform(0, math.pi)
    rec[prefix + "nedge"] = nedge
    rec[prefix + "ephase"] = rng.uniform(0, 2 * math.pi)
    rec[prefix + "ejit"] = rng.normal(0.0, edge_jitter, MAX_EDGES) if edge_jitter else np.zeros(MAX_EDGES)
    amps = np.zeros(N_HARM)
    for k, sd in (harm or {}).items():
        amps[k - 2] = rng.normal(0.0, sd) if sd > 0 else -sd  # negative sd: fixed amplitude
    rec[prefix + "harm"] = amps
    rec[prefix + "hphase"] = rng.uniform(0, 2 * math.pi, N_HARM)


def make_cell(cls: int, x: float, y: float, r_um: float, px_per_um: float, style: SlideStyle,
              rng: np.random.Generator, group: int = -1) -> np.void:
    """One cell record of class ``cls`` centred at level-0 (x, y) with equivalent radius ``r_um``."""
    rec = np.zeros((), CELL_DTYPE)[()]
    rec["cls"] = cls
    rec["group"] = group
    u = px_per_um
    r = r_um * u
    od = style.od
    cd = style.cyto_density
    nd = style.nuclear_density
    rec["cyto_tex"] = style.cyto_texture
    if cls in (SUPERFICIAL, INTERMEDIATE, LSIL):
        _set_outline(rec, "c_", rng, x, y, r, rng.uniform(1.0, 1.45), int(rng.choice([5, 6, 6, 7])), 0.06,
                     {2: 0.03, 3: 0.025, 4: 0.02, 5: 0.012})
        rec["rim"] = rng.uniform(0.4, 1.0)
        if rng.random() < 0.3:  # a folded-over edge: a strip of doubled cytoplasm with a sharp straight border
            rec["fold"] = rng.uniform(0.6, 1.0)
            rec["fold_ang"] = rng.uniform(0, 2 * math.pi)
            rec["fold_off"] = r * rng.uniform(0.45, 0.8)
    elif cls == INFLAMMATORY:
        _set_outline(rec, "c_", rng, x, y, r, rng.uniform(1.0, 1.2), harm={2: 0.03, 3: 0.02})
        rec["rim"] = 0.0
    else:
        _set_outline(rec, "c_", rng, x, y, r, rng.uniform(1.0, 1.35), harm={2: 0.04, 3: 0.04, 4: 0.02})
        rec["rim"] = rng.uniform(0.1, 0.3)

    def nucleus(r_n_um: float, offset: float, aspect: float, harm: dict, density: float, stain_tex: float,
                coarse: float, rim: float) -> None:
        ang = rng.uniform(0, 2 * math.pi)
        dist = offset * rng.uniform(0, 1)
        _set_outline(rec, "n_", rng, x + dist * math.cos(ang), y + dist * math.sin(ang), r_n_um * u, aspect,
                     harm=harm)
        rec["nuc_od"] = od["haem"] * density * nd
        rec["nuc_tex"] = stain_tex
        rec["nuc_coarse"] = coarse
        rec["nuc_rim"] = rim

    if cls == SUPERFICIAL:
        pink = rng.random() < 0.6 + 0.35 * style.eosin_share
        stain = ("orange" if rng.random() < 0.25 else "eosin") if pink else "cyan"
        rec["cyto_od"] = od[stain] * rng.uniform(0.4, 0.8) * cd
        nucleus(rng.uniform(2.0, 3.0), 0.15 * r, rng.uniform(1.0, 1.2), {2: 0.02}, rng.uniform(1.5, 2.0), 0.05,
                0.0, 0.0)
    elif cls == INTERMEDIATE:
        stain = "eosin" if rng.random() < 0.15 * style.eosin_share else "cyan"
        rec["cyto_od"] = od[stain] * rng.uniform(0.4, 0.8) * cd
        nucleus(rng.uniform(3.6, 4.6), 0.2 * r, rng.uniform(1.0, 1.3), {2: 0.02, 3: 0.015},
                rng.uniform(0.75, 1.0), 0.35, 0.0, 0.2)
    elif cls == PARABASAL:
        rec["cyto_od"] = od["cyan_dense"] * rng.uniform(0.8, 1.2) * cd
        nucleus(rng.uniform(3.8, 5.0), 0.2 * r, rng.uniform(1.0, 1.25), {2: 0.02, 3: 0.02},
                rng.uniform(0.9, 1.2), 0.35, 0.0, 0.2)
    elif cls == LSIL:
        stain = "cyan" if rng.random() < 0.7 else "eosin"
        rec["cyto_od"] = od[stain] * rng.uniform(0.7, 1.05) * cd
        r_n = rng.uniform(5.8, 7.5)
        nucleus(r_n, 0.1 * r, rng.uniform(1.05, 1.4),
                {2: 0.06, 3: 0.04, 5: 0.035, 6: 0.03, 7: 0.025}, rng.uniform(1.05, 1.35), 0.4, 0.5, 0.35)
        # Perinuclear halo: a clear cavity around the nucleus, sharply outlined by condensed cytoplasm.
        r_h = max(rng.uniform(0.48, 0.66) * r_um, r_n * 1.9)
        _set_outline(rec, "h_", rng, rec["n_x"], rec["n_y"], r_h * u, rng.uniform(1.0, 1.3),
                     harm={2: 0.06, 3: 0.05, 4: 0.03})
        rec["halo_rim"] = rng.uniform(0.9, 1.6)
    elif cls == HSIL:
        rec["cyto_od"] = od["cyan_dense"] * rng.uniform(0.7, 1.1) * cd
        ratio = rng.uniform(0.64, 0.82)
        nucleus(r_um * ratio, 0.35 * r * (1 - ratio), rng.uniform(1.0, 1.45),
                {2: 0.08, 3: 0.07, 4: 0.06, 5: 0.04}, rng.uniform(1.0, 1.35), 0.5, 0.7, 0.4)
    else:  # inflammatory
        if rng.random() < 0.75:  # neutrophil: faint cytoplasm, 3-4 lobed nucleus
            rec["cyto_od"] = od["leuko"] * rng.uniform(0.7, 1.1) * cd
            lobes = int(rng.choice([3, 4]))
            nucleus(0.62 * r_um, 0.1 * r, rng.uniform(1.0, 1.2), {lobes: -rng.uniform(0.18, 0.25), 2: 0.05},
                    rng.uniform(1.3, 1.7), 0.15, 0.0, 0.1)
        else:  # lymphocyte: thin rim of cytoplasm around a round dark nucleus
            rec["c_r"] = r * 0.8
            rec["cyto_od"] = od["cyan_dense"] * 0.5 * cd
            nucleus(0.8 * 0.84 * r_um, 0.05 * r, rng.uniform(1.0, 1.15), {2: 0.03}, rng.uniform(1.4, 1.8), 0.2,
                    0.3, 0.0)
    if cls in (PARABASAL, HSIL, INFLAMMATORY):  # large nuclei: make sure they sit inside their cell
        fit_nucleus(rec)
    finish(rec)
    return rec


def fit_nucleus(rec, margin_px: float = 2.0) -> None:
    """Move the nucleus towards the cell centre, then shrink it, until its outline is inside the cell's."""
    cell = Outline.of(rec, "c_")
    table = radius_table(cell)
    for attempt in range(12):
        nuc = Outline.of(rec, "n_")
        pts = polygon(nuc, radius_table(nuc), 32)
        if (distance_at(cell, table, pts[:, 0], pts[:, 1]) < -margin_px).all():
            return
        if attempt < 4:
            rec["n_x"] = 0.5 * (rec["n_x"] + rec["c_x"])
            rec["n_y"] = 0.5 * (rec["n_y"] + rec["c_y"])
        else:
            rec["n_r"] *= 0.93


def finish(rec) -> None:
    """Bounding box and total optical mass (for drawing a cell that is smaller than a pixel at low levels)."""
    cell = Outline.of(rec, "c_")
    reach = max(cell.reach, Outline.of(rec, "n_").reach + math.hypot(rec["n_x"] - rec["c_x"], rec["n_y"] - rec["c_y"]))
    reach += 2.0
    rec["bbox"] = (rec["c_x"] - reach, rec["c_y"] - reach, rec["c_x"] + reach, rec["c_y"] + reach)
    a_c = math.pi * rec["c_r"] ** 2
    a_n = math.pi * rec["n_r"] ** 2
    a_h = math.pi * rec["h_r"] ** 2
    halo_ring = 0.5 * rec["halo_rim"] * 2 * math.pi * rec["h_r"] * 3.0  # rough mass of the condensed halo rim
    cyto = a_c * (1 + 0.2 * rec["rim"] + 0.1 * rec["fold"]) - 0.85 * a_h + halo_ring
    rec["mass"] = rec["cyto_od"] * max(cyto, 0.0) + rec["nuc_od"] * a_n
