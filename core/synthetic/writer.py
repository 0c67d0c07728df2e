"""Stream a pyramidal, tiled, JPEG-compressed TIFF to disk one tile at a time.

Each pyramid level is drawn directly at its own resolution by the renderer, so no level is ever held in memory
and no temporary full-resolution copy is needed: memory stays bounded by a few tiles per worker thread whatever
the slide size. Tiles are drawn and JPEG-encoded on worker threads (numpy and the JPEG codec release the GIL) and
handed to tifffile in order as ready-made compressed tiles.

Two layouts are written. A generic tiled TIFF carries its microns-per-pixel in the resolution tags (pixels per
centimetre), which is where OpenSlide's generic-tiff reader finds ``openslide.mpp-x``. An Aperio-style SVS
(chosen by the ``.svs`` suffix) adds what scanners store: an ImageDescription with ``MPP`` and ``AppMag``, a
thumbnail, a slide label and a macro photograph, which OpenSlide exposes as associated images.
"""

from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from ..io import atomic_path
from .render import NOISE_BANK, Renderer

APERIO_VERSION = "Aperio Image Library v12.0.15"


@dataclass(frozen=True)
class Level:
    downsample: int
    width: int
    height: int

    def tiles(self, tile: int) -> tuple[int, int]:
        return math.ceil(self.width / tile), math.ceil(self.height / tile)


def pyramid_levels(width: int, height: int, tile: int) -> list[Level]:
    """Levels halving each time down to the first that fits in one tile."""
    levels = [Level(1, width, height)]
    ds = 1
    while max(levels[-1].width, levels[-1].height) > tile:
        ds *= 2
        levels.append(Level(ds, math.ceil(width / ds), math.ceil(height / ds)))
    return levels


def ordered_parallel(func: Callable, items: Iterable, workers: int, window: int) -> Iterator:
    """``map(func, items)`` on ``workers`` threads, in order, with at most ``window`` results pending."""
    if workers <= 1:
        for item in items:
            yield func(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synth-tile") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(func, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


class PyramidWriter:
    """Writes one renderer's slide; ``write`` returns the number of tiles written."""

    def __init__(self, renderer: Renderer, width: int, height: int, mpp: float, tile: int = 512,
                 quality: int = 85, workers: int | None = None, aperio: bool = False, description: str = "",
                 label: np.ndarray | None = None, progress: Callable[[int, int], None] | None = None,
                 seed: int = 0) -> None:
        if tile % 16:
            raise ValueError("tile size must be a multiple of 16 (JPEG blocks with 4:2:0 chroma subsampling)")
        self.r = renderer
        self.width, self.height, self.mpp, self.tile = width, height, mpp, tile
        self.quality = int(quality)
        self.workers = workers or max(1, min(8, os.cpu_count() or 1))
        self.aperio = aperio
        self.description = description
        self.label = label
        self.progress = progress
        self.seed = seed
        self.levels = pyramid_levels(width, height, tile)
        self.total_tiles = sum(a * b for a, b in (lv.tiles(tile) for lv in self.levels))
        self._done = 0
        self._empty: dict[tuple[int, int], bytes] = {}

    # ---------------------------------------------------------------------------------------------- tiles
    def _encode(self, rgb: np.ndarray) -> bytes:
        import imagecodecs

        return imagecodecs.jpeg8_encode(rgb, level=self.quality)

    def _noise_key(self, k: int, tx: int, ty: int) -> int:
        return (tx * 73856093 ^ ty * 19349663 ^ k * 83492791 ^ self.seed * 2654435761) & 0x7FFFFFFF

    def _tile_bytes(self, job: tuple[int, int, int]) -> bytes:
        k, tx, ty = job
        lv = self.levels[k]
        t = self.tile
        key = self._noise_key(k, tx, ty)
        if self.r.is_empty(lv.downsample, tx * t, ty * t, t, t):
            return self._empty[(k, key % NOISE_BANK)]
        return self._encode(self.r.region(lv.downsample, tx * t, ty * t, t, t, key))

    def _level_tiles(self, k: int) -> Iterator[bytes]:
        lv = self.levels[k]
        t = self.tile
        for bank in range(NOISE_BANK):  # empty glass tiles are encoded once per level and reused
            self._empty[(k, bank)] = self._encode(self.r.background(lv.downsample, t, t, bank))
        nx, ny = lv.tiles(t)
        jobs = ((k, tx, ty) for ty in range(ny) for tx in range(nx))
        for data in ordered_parallel(self._tile_bytes, jobs, self.workers, 4 * self.workers):
            self._done += 1
            if self.progress is not None:
                self.progress(self._done, self.total_tiles)
            yield data

    # ---------------------------------------------------------------------------------------------- pages
    def write(self, path: str | os.PathLike) -> int:
        import tifffile

        big = self.width * self.height * 3 > 2**31
        with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=big) as tw:
            for k, lv in enumerate(self.levels):
                self._write_level(tw, k, lv)
                if self.aperio and k == 0:
                    self._write_thumbnail(tw)
            if self.aperio:
                self._write_associated(tw)
        return self._done

    def _write_level(self, tw, k: int, lv: Level) -> None:
        mpp = self.mpp * lv.downsample
        px_per_cm = 1e4 / mpp
        if self.aperio:
            desc = self._aperio_description(lv) if k else self._aperio_description(None)
        else:
            desc = self.description if k == 0 else None
        tw.write(
            self._level_tiles(k),
            shape=(lv.height, lv.width, 3),
            dtype=np.uint8,
            tile=(self.tile, self.tile),
            photometric="rgb",
            compression="jpeg",
            subsampling=(2, 2),
            resolution=(px_per_cm, px_per_cm),
            resolutionunit="CENTIMETER",
            subfiletype=1 if k else 0,
            description=desc,
            software="CervixFM synthetic" if k == 0 else False,
            metadata=None,
        )

    def _aperio_description(self, lv: Level | None) -> str:
        w, h = self.width, self.height
        mag = int(round(10.0 / self.mpp))
        tail = f"AppMag = {mag}|MPP = {self.mpp:.4f}|Generator = CervixFM synthetic Pap smear|{self.description}"
        if lv is None:
            t = self.tile
            return f"{APERIO_VERSION} \r\n{w}x{h} [0,0 {w}x{h}] ({t}x{t}) JPEG/RGB Q={self.quality}|{tail}"
        return f"{APERIO_VERSION} \r\n{w}x{h} -> {lv.width}x{lv.height} - |{tail}"

    def _write_thumbnail(self, tw) -> None:
        ds = max(self.width, self.height) / 768.0
        tw_, th_ = max(1, round(self.width / ds)), max(1, round(self.height / ds))
        thumb = self.r.region(ds, 0, 0, tw_, th_, noise_key=1)
        tw.write(thumb, photometric="rgb", compression="jpeg", compressionargs={"level": 90}, rowsperstrip=16,
                 description=self._aperio_description(Level(0, tw_, th_)), metadata=None, software=False)

    def _write_associated(self, tw) -> None:
        label = self.label if self.label is not None else np.full((256, 256, 3), 255, np.uint8)
        tw.write(label, photometric="rgb", compression="lzw", subfiletype=1, metadata=None, software=False,
                 description=f"{APERIO_VERSION}\r\nlabel {label.shape[1]}x{label.shape[0]}")
        macro = self._macro(label)
        tw.write(macro, photometric="rgb", compression="jpeg", compressionargs={"level": 90}, rowsperstrip=16,
                 subfiletype=9, metadata=None, software=False,
                 description=f"{APERIO_VERSION}\r\nmacro {macro.shape[1]}x{macro.shape[0]}")

    def _macro(self, label: np.ndarray) -> np.ndarray:
        """A photograph of the whole glass slide: the label on the left, the smear on the right."""
        from PIL import Image

        height = 320
        ds = max(self.height / (height * 0.8), self.width / 720.0)
        sw, sh = max(1, round(self.width / ds)), max(1, round(self.height / ds))
        smear = self.r.region(ds, 0, 0, sw, sh, noise_key=2)
        lab = np.asarray(Image.fromarray(label).resize((int(height * 0.8), int(height * 0.8))))
        width = lab.shape[1] + sw + 60
        glass = np.full((height, width, 3), (214, 218, 216), np.uint8)
        y = (height - lab.shape[0]) // 2
        glass[y:y + lab.shape[0], 20:20 + lab.shape[1]] = lab
        y = (height - sh) // 2
        glass[y:y + sh, 40 + lab.shape[1]:40 + lab.shape[1] + sw] = smear
        return glass
