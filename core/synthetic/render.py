"""Draw any rectangle of a synthetic slide at any downsample, from the layout alone.

Every pixel is a pure function of the layout, the style and its level-0 position: tiles can be drawn in any
order, on any thread, and neighbours meet without seams. Optical densities of overlapping cells add, so drawing
order does not matter either. A level is drawn directly at its resolution (not shrunk from level 0): edges are
antialiased ramps one pixel wide (wider when the slide is out of focus), textures come from a mip-map, and a
cell or nucleus smaller than a pixel is deposited as its total optical mass, so every level matches a shrunk
level 0 in colour and darkness.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np

from .layout import Layout
from .shapes import Outline, radius_table, signed_distance
from .style import SlideStyle
from .textures import make_textures

NOISE_BANK = 6
#: Below this size (in pixels of the level being drawn) a cell or nucleus is drawn as a point of optical mass.
POINT_RADIUS_PX = 0.75


class _TableCache:
    """Radius tables of recently drawn outlines; neighbouring tiles ask for the same cells."""

    def __init__(self, size: int = 4096) -> None:
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, key, outline: Outline) -> np.ndarray:
        with self._lock:
            table = self._data.get(key)
            if table is not None:
                self._data.move_to_end(key)
                return table
        table = radius_table(outline)
        with self._lock:
            self._data[key] = table
            if len(self._data) > self._size:
                self._data.popitem(last=False)
        return table


class Renderer:
    """Draws regions of one synthetic slide. Thread-safe and deterministic."""

    def __init__(self, layout: Layout, style: SlideStyle, rng: np.random.Generator, tile: int = 512) -> None:
        self.layout = layout
        self.style = style
        self.tile = tile
        self.textures = make_textures(rng)
        self._noise = [rng.standard_normal((3, tile, tile)).astype(np.float32) for _ in range(NOISE_BANK)]
        self._tables = _TableCache()
        self._px_per_um = 1.0 / layout.mpp
        # Defocus lowers the contrast of fine texture as well as softening edges.
        self._tex_gain = 1.0 / (1.0 + 0.5 * style.focus_sigma)
        self._bg = np.asarray(style.background, np.float32)[:, None, None]

    # --------------------------------------------------------------------------------------------- public
    def region(self, ds: float, col0: int, row0: int, w: int, h: int, noise_key: int = 0) -> np.ndarray:
        """RGB uint8 (h, w, 3) for pixels [col0, col0+w) x [row0, row0+h) of the level with downsample ``ds``."""
        od = self.optical_density(ds, col0, row0, w, h)
        return self._finish(od, ds, w, h, noise_key)

    def is_empty(self, ds: float, col0: int, row0: int, w: int, h: int) -> bool:
        return len(self._cells_for(ds, col0, row0, w, h)) == 0

    def background(self, ds: float, w: int, h: int, noise_key: int = 0) -> np.ndarray:
        """Empty glass: the background colour plus sensor noise."""
        return self._finish(None, ds, w, h, noise_key)

    # ----------------------------------------------------------------------------------------------- core
    def _cells_for(self, ds, col0, row0, w, h) -> np.ndarray:
        m = (0.5 * self.style.edge_width(ds) + 1.0) * ds
        return self.layout.query(col0 * ds - m, row0 * ds - m, (col0 + w) * ds + m, (row0 + h) * ds + m)

    def optical_density(self, ds: float, col0: int, row0: int, w: int, h: int) -> np.ndarray | None:
        """Summed optical density, planar (3, h, w) float32 (channel planes add faster than RGB triples), or None
        when no cell touches the region."""
        idx = self._cells_for(ds, col0, row0, w, h)
        if len(idx) == 0:
            return None
        cells = self.layout.cells
        od = np.zeros((3, h, w), np.float32)
        xs = (col0 + np.arange(w) + 0.5) * ds
        ys = (row0 + np.arange(h) + 0.5) * ds
        small = cells["c_r"][idx] / ds < POINT_RADIUS_PX
        if small.any():
            sel = idx[small]
            self._deposit(od, ds, col0, row0, cells["c_x"][sel], cells["c_y"][sel], cells["mass"][sel])
        big = idx[~small]
        if len(big):
            ctx = _Context(self, ds, col0, row0, w, h, xs, ys)
            for i in big:
                self._draw_cell(od, ctx, int(i), cells[i])
        return od

    def _finish(self, od, ds, w, h, noise_key) -> np.ndarray:
        """Transmitted light (glass colour x exp(-OD)) plus sensor noise, rounded to uint8; all in place."""
        if od is None:
            rgb = np.empty((3, h, w), np.float32)
            rgb[:] = self._bg
        else:
            rgb = od
            np.negative(rgb, out=rgb)
            np.exp(rgb, out=rgb)
            rgb *= self._bg
        sigma = self.style.noise_sigma / ds
        if sigma >= 0.2:
            if h <= self.tile and w <= self.tile:
                noise = self._noise[noise_key % NOISE_BANK][:, :h, :w]
            else:
                noise = np.random.default_rng(noise_key).standard_normal((3, h, w), np.float32)
            rgb += noise * np.float32(sigma)
        rgb += np.float32(0.5)
        np.clip(rgb, 0, 255, out=rgb)
        planes = rgb.astype(np.uint8)
        out = np.empty((h, w, 3), np.uint8)
        for c in range(3):
            out[..., c] = planes[c]
        return out

    def _deposit(self, od, ds, col0, row0, xs, ys, masses) -> None:
        """Add optical mass (OD x level-0 px^2) at level-0 points, split bilinearly over the 4 nearest pixels."""
        h, w = od.shape[1:]
        fx = xs / ds - col0 - 0.5
        fy = ys / ds - row0 - 0.5
        j0 = np.floor(fx).astype(np.int64)
        i0 = np.floor(fy).astype(np.int64)
        ax, ay = fx - j0, fy - i0
        m = masses.astype(np.float32) / np.float32(ds * ds)
        flat = od.reshape(3, -1)
        for di, dj, wt in ((0, 0, (1 - ax) * (1 - ay)), (0, 1, ax * (1 - ay)), (1, 0, (1 - ax) * ay),
                           (1, 1, ax * ay)):
            ii, jj = i0 + di, j0 + dj
            ok = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
            if ok.any():
                at = ii[ok] * w + jj[ok]
                share = wt[ok].astype(np.float32)
                for c in range(3):
                    np.add.at(flat[c], at, m[ok, c] * share)

    def _draw_cell(self, od: np.ndarray, ctx: "_Context", i: int, rec) -> None:
        ds = ctx.ds
        sl = ctx.window(rec["bbox"])
        if sl is None:
            return
        rs, cs = sl
        xs, ys = ctx.xs[cs], ctx.ys[rs]
        cell = Outline.of(rec, "c_")
        d = signed_distance(cell, self._tables.get((i, 0), cell), xs, ys)
        cov = np.clip(np.float32(0.5) - d * np.float32(ctx.k), 0.0, 1.0)
        dens = cov * (1.0 + np.float32(rec["cyto_tex"] * self._tex_gain) * ctx.texture("cyto")[rs, cs])
        if rec["rim"] > 0:
            rim_w = max(1.5 * self._px_per_um, ds)
            dens *= 1.0 + np.float32(rec["rim"]) * np.clip(1.0 + d / np.float32(rim_w), 0.0, 1.0)
        if rec["fold"] > 0:
            a = float(rec["fold_ang"])
            beyond = ((xs - cell.x) * math.cos(a) - rec["fold_off"]).astype(np.float32)[None, :] + \
                ((ys - cell.y) * math.sin(a)).astype(np.float32)[:, None]
            dens *= 1.0 + np.float32(rec["fold"]) * np.clip(beyond * np.float32(ctx.k) + np.float32(0.5), 0.0, 1.0)
        if rec["h_r"] > 0 and rec["h_r"] / ds >= POINT_RADIUS_PX:
            halo = Outline.of(rec, "h_")
            dh = signed_distance(halo, self._tables.get((i, 2), halo), xs, ys)
            inside = np.clip(np.float32(0.5) - dh * np.float32(ctx.k), 0.0, 1.0)
            dens *= 1.0 - np.float32(0.9) * inside
            hw = max(1.5 * self._px_per_um, ds)
            dens += cov * np.float32(rec["halo_rim"]) * np.exp(-(dh / np.float32(hw)) ** 2)
        od[:, rs, cs] += rec["cyto_od"][:, None, None] * dens[None]

        nuc = Outline.of(rec, "n_")
        if nuc.r / ds < POINT_RADIUS_PX:
            mass = (rec["nuc_od"] * (math.pi * nuc.r * nuc.r))[None, :]
            self._deposit(od, ds, ctx.col0, ctx.row0, np.array([nuc.x]), np.array([nuc.y]), mass)
            return
        reach = nuc.reach + 2.0
        nsl = ctx.window((nuc.x - reach, nuc.y - reach, nuc.x + reach, nuc.y + reach))
        if nsl is None:
            return
        nr, nc = nsl
        dn = signed_distance(nuc, self._tables.get((i, 1), nuc), ctx.xs[nc], ctx.ys[nr])
        covn = np.clip(np.float32(0.5) - dn * np.float32(ctx.k), 0.0, 1.0)
        coarse = float(rec["nuc_coarse"])
        tex = ctx.texture("fine")[nr, nc] if coarse < 1 else 0.0
        if coarse > 0:
            tex = (1 - coarse) * tex + coarse * ctx.texture("coarse")[nr, nc]
        densn = covn * (1.0 + np.float32(rec["nuc_tex"] * self._tex_gain) * tex)
        if rec["nuc_rim"] > 0:
            rim_w = max(0.8 * self._px_per_um, ds)
            densn *= 1.0 + np.float32(rec["nuc_rim"]) * np.clip(1.0 + dn / np.float32(rim_w), 0.0, 1.0)
        od[:, nr, nc] += rec["nuc_od"][:, None, None] * densn[None]


class _Context:
    """Per-region values shared by all cells drawn into it (pixel centres, lazily cut texture windows)."""

    def __init__(self, renderer: Renderer, ds, col0, row0, w, h, xs, ys) -> None:
        self.r = renderer
        self.ds, self.col0, self.row0, self.w, self.h = ds, col0, row0, w, h
        self.xs, self.ys = xs, ys
        edge = renderer.style.edge_width(ds)
        self.k = 1.0 / (edge * ds)
        self.margin = 0.5 * edge + 1.0
        self._tex: dict[str, np.ndarray] = {}

    def texture(self, name: str) -> np.ndarray:
        t = self._tex.get(name)
        if t is None:
            t = self.r.textures[name].window(self.ds, self.col0, self.row0, self.w, self.h)
            self._tex[name] = t
        return t

    def window(self, bbox) -> tuple[slice, slice] | None:
        """Rows and columns of this region that a level-0 bounding box can touch (ramp margin included)."""
        ds, m = self.ds, self.margin
        c0 = max(0, int(math.floor((bbox[0] / ds) - self.col0 - m)))
        c1 = min(self.w, int(math.ceil((bbox[2] / ds) - self.col0 + m)))
        r0 = max(0, int(math.floor((bbox[1] / ds) - self.row0 - m)))
        r1 = min(self.h, int(math.ceil((bbox[3] / ds) - self.row0 + m)))
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(r0, r1), slice(c0, c1)
