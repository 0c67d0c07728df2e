"""Star-shaped outlines for cells, nuclei and koilocyte halos: one model both drawn and exported.

An outline is a radius as a function of angle, r(phi): optionally a convex polygon (squamous cells are flat,
angular sheets), times a few low harmonics (irregular nuclear contours, lobed neutrophil nuclei), stretched by an
aspect ratio and rotated. Rendering looks r(phi) up in a table per pixel, and the GeoJSON polygon samples the same
table, so the ground truth is exactly what was drawn. A star-shaped outline sampled around its centre is always a
simple (valid) polygon, which QuPath requires.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

MAX_EDGES = 8
N_HARM = 6  # harmonics k = 2 .. 7
TABLE = 1024
_PHI = (-math.pi + (np.arange(TABLE) + 0.5) * (2 * math.pi / TABLE)).astype(np.float64)
_K = np.arange(2, 2 + N_HARM, dtype=np.float64)


def shape_fields(prefix: str) -> list[tuple]:
    """The structured-dtype fields of one outline, under ``prefix`` (``c_`` cell, ``n_`` nucleus, ``h_`` halo)."""
    return [
        (prefix + "x", "f8"), (prefix + "y", "f8"), (prefix + "r", "f4"), (prefix + "aspect", "f4"),
        (prefix + "rot", "f4"), (prefix + "nedge", "i4"), (prefix + "ephase", "f4"),
        (prefix + "ejit", "f4", (MAX_EDGES,)), (prefix + "harm", "f4", (N_HARM,)),
        (prefix + "hphase", "f4", (N_HARM,)),
    ]


class Outline(NamedTuple):
    x: float
    y: float
    r: float  # radius of the circle with the same area, level-0 px
    aspect: float  # >= 1: long axis / short axis (area-preserving stretch)
    rot: float
    nedge: int  # 0: smooth; >= 3: convex polygon base
    ephase: float
    ejit: np.ndarray
    harm: np.ndarray
    hphase: np.ndarray

    @classmethod
    def of(cls, rec, prefix: str) -> "Outline":
        return cls(*(rec[prefix + f] for f in cls._fields))

    @property
    def reach(self) -> float:
        """An upper bound of the distance from the centre to the outline (for bounding boxes)."""
        poly = 1.0 / math.cos(math.pi / self.nedge) if self.nedge >= 3 else 1.0
        jit = 1.0 + float(np.abs(self.ejit).max()) if self.nedge >= 3 else 1.0
        wobble = 1.0 + float(np.abs(self.harm).sum())
        return 1.15 * self.r * poly * jit * wobble * math.sqrt(max(self.aspect, 1.0 / self.aspect))


def radius_table(o: Outline) -> np.ndarray:
    """r(phi) at ``TABLE`` angles in the stretched frame, scaled so the outline's area is pi r^2."""
    if o.nedge >= 3:
        n = int(o.nedge)
        alphas = o.ephase + 2 * math.pi * np.arange(n) / n
        cosd = np.cos(_PHI[:, None] - alphas[None, :])
        h = 1.0 + np.asarray(o.ejit[:n], np.float64)
        with np.errstate(divide="ignore"):
            r = np.where(cosd > 1e-3, h[None, :] / np.maximum(cosd, 1e-3), np.inf).min(axis=1)
    else:
        r = np.ones(TABLE)
    harm = np.asarray(o.harm, np.float64)
    if np.any(harm):
        r = r * (1.0 + (harm[None, :] * np.cos(_K[None, :] * _PHI[:, None] + np.asarray(o.hphase)[None, :])).sum(1))
    r = np.maximum(r, 0.15 * r.max())
    area = 0.5 * float((r * r).sum()) * (2 * math.pi / TABLE)
    return (r * (o.r / math.sqrt(area / math.pi))).astype(np.float32)


def signed_distance(o: Outline, table: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """rho - r(phi) on the grid of level-0 pixel centres ``xs`` (columns) x ``ys`` (rows); < 0 inside.

    Measured in the stretched frame, which is within the aspect ratio of the true distance: good enough for
    antialiasing and rim shading.
    """
    dx = (xs - o.x).astype(np.float32)[None, :]
    dy = (ys - o.y).astype(np.float32)[:, None]
    return _distance(o, table, dx, dy)


def distance_at(o: Outline, table: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """``signed_distance`` at scattered level-0 points (px[i], py[i])."""
    return _distance(o, table, (np.asarray(px) - o.x).astype(np.float32), (np.asarray(py) - o.y).astype(np.float32))


def _distance(o: Outline, table: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    c, s = math.cos(o.rot), math.sin(o.rot)
    sa = math.sqrt(o.aspect)
    u = (dx * np.float32(c / sa)) + (dy * np.float32(s / sa))
    v = (dy * np.float32(c * sa)) - (dx * np.float32(s * sa))
    rho = np.sqrt(u * u + v * v)
    idx = ((np.arctan2(v, u) + np.float32(math.pi)) * np.float32(TABLE / (2 * math.pi))).astype(np.int32)
    np.minimum(idx, TABLE - 1, out=idx)
    return rho - table[idx]


def polygon(o: Outline, table: np.ndarray, n: int = 48) -> np.ndarray:
    """The outline as an (n, 2) array of level-0 (x, y) vertices, counter-clockwise in image coordinates."""
    step = TABLE // n
    idx = np.arange(0, TABLE, step)[:n] + step // 2
    phi = _PHI[idx]
    r = table[idx].astype(np.float64)
    sa = math.sqrt(o.aspect)
    u = r * np.cos(phi) * sa
    v = r * np.sin(phi) / sa
    c, s = math.cos(o.rot), math.sin(o.rot)
    return np.stack([o.x + u * c - v * s, o.y + u * s + v * c], axis=1)


def area(o: Outline) -> float:
    return math.pi * o.r * o.r
