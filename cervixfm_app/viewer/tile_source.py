"""The bridge from ``core.slides`` to the screen: slide tiles read and decoded off the GUI thread.

The view asks for a rectangle at a zoom; this module turns that into tiles of a power-of-two pyramid (level k is
the slide at 2**k level-0 pixels per pixel, 512 x 512 pixels a tile), whatever pyramid the file itself has:
``Slide.read_scaled`` reads each tile from the best stored level, so a plain image or an SVS with 4x steps streams
like a 2x pyramid, and every tile of level k lies inside exactly one tile of level k + 1. That nesting is what lets
the view draw a missing tile from its parent, scaled up, until it arrives.

Reads run on a few daemon threads (OpenSlide and numpy release the GIL). Each tile becomes an ``RGB32`` QImage in
the reader thread, the layout the raster paint engine blits without conversion, and goes into a byte-bounded
``TileCache``. Requests are prioritised (visible tiles centre-out, the parent level, the ring around the view, the
next finer level) and a new request replaces what was still waiting, so panning never queues stale work. The
whole slide at the coarsest level (at most 1024 pixels a side) is read once when the source opens: it is the
overview thumbnail and the picture of last resort, so the view is never blank.
"""

from __future__ import annotations

import logging
import math
from functools import partial

import numpy as np
from PySide6.QtCore import QObject, QRect, Signal
from PySide6.QtGui import QColor, QImage

from core.errors import CervixFMError, SlideError
from core.slides import Slide, TileCache, default_cache_bytes

from .workers import JobQueue, Mailbox

log = logging.getLogger(__name__)

TILE_PX = 512
#: The whole-slide base image is the first power-of-two level whose longer side fits this.
BASE_MAX_PX = 1024
#: A stored-level region above this many pixels is read in pieces (huge single-level files).
MAX_READ_PIXELS = 4096 * 4096
READER_THREADS = 3


def viewer_cache_bytes() -> int:
    """A sixteenth of physical memory, between 128 MiB and 1 GiB: hundreds of 1 MiB tiles."""
    return int(min(max(default_cache_bytes(1 / 16), 128 * 2**20), 2**30))


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """(h, w, 3) uint8 RGB -> an ``RGB32`` QImage that owns its pixels."""
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).convertToFormat(QImage.Format.Format_RGB32)


def qimage_to_rgb(image: QImage) -> np.ndarray:
    """A QImage (any format) -> (h, w, 3) uint8 RGB copy; tests and screenshots compare pixels with it."""
    img = image.convertToFormat(QImage.Format.Format_RGB888)
    h, w = img.height(), img.width()
    buf = np.frombuffer(img.constBits(), np.uint8, count=img.bytesPerLine() * h).reshape(h, img.bytesPerLine())
    return buf[:, : 3 * w].reshape(h, w, 3).copy()


def read_scaled_bounded(slide: Slide, x: float, y: float, w0: float, h0: float, out_w: int, out_h: int) -> np.ndarray:
    """``Slide.read_scaled`` that never asks the stored level for more than ``MAX_READ_PIXELS`` at once (a
    single-level 60,000-pixel TIFF seen whole would otherwise be read whole)."""
    ds = min(w0 / out_w, h0 / out_h)
    lds = slide.level_downsamples[slide.level_for_downsample(ds)]
    if (w0 / lds) * (h0 / lds) <= MAX_READ_PIXELS:
        return slide.read_scaled(x, y, w0, h0, out_w, out_h)
    out = np.empty((out_h, out_w, 3), np.uint8)
    step = max(1, int(math.sqrt(MAX_READ_PIXELS) * lds / ds))  # output pixels per piece
    sx, sy = w0 / out_w, h0 / out_h
    for oy in range(0, out_h, step):
        for ox in range(0, out_w, step):
            cw, ch = min(step, out_w - ox), min(step, out_h - oy)
            out[oy:oy + ch, ox:ox + cw] = slide.read_scaled(x + ox * sx, y + oy * sy, cw * sx, ch * sy, cw, ch)
    return out


class TileSource(QObject):
    """Tiles of one slide for the view. Owns the slide: ``close()`` stops the readers, then closes it.

    Keys are ``(level, col, row)``. ``tile(key)`` answers from memory only (never blocks); ``request_view`` queues
    what a view needs; ``tilesArrived`` fires (in the GUI thread) when new tiles are in memory.
    """

    tilesArrived = Signal()
    readFailed = Signal(str)

    def __init__(self, slide: Slide, cache_bytes: int | None = None, threads: int = READER_THREADS,
                 tile_px: int = TILE_PX, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.slide = slide
        self.tile_px = int(tile_px)
        self.width, self.height = (int(v) for v in slide.dimensions)
        longest = max(self.width, self.height)
        self.top_level = max(0, math.ceil(math.log2(max(longest / BASE_MAX_PX, 1.0))))
        self.base = rgb_to_qimage(read_scaled_bounded(slide, 0, 0, self.width, self.height,
                                                      *self.level_size(self.top_level)))
        self.cache = TileCache(cache_bytes if cache_bytes is not None else viewer_cache_bytes())
        self._failed: dict[tuple[int, int, int], str] = {}
        self._closed = False
        self._mail = Mailbox(self)
        self._mail.arrived.connect(self._on_arrived)
        self.jobs = JobQueue(threads, "tile-reader")
        self.reads = 0

    # ---------------------------------------------------------------------------------------------- geometry
    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def mpp(self) -> tuple[float, float]:
        return self.slide.mpp

    @staticmethod
    def downsample(level: int) -> float:
        return float(2**level)

    def level_size(self, level: int) -> tuple[int, int]:
        d = 2**level
        return max(1, math.ceil(self.width / d)), max(1, math.ceil(self.height / d))

    def grid(self, level: int) -> tuple[int, int]:
        w, h = self.level_size(level)
        return math.ceil(w / self.tile_px), math.ceil(h / self.tile_px)

    def level_for(self, ds: float) -> int:
        """The coarsest level that is still at least as detailed as ``ds`` level-0 pixels per screen pixel."""
        if ds <= 1.0:
            return 0
        return int(min(self.top_level, math.floor(math.log2(ds * 1.005))))

    def tile_rect(self, key: tuple[int, int, int]) -> tuple[float, float, float, float]:
        """Level-0 (x0, y0, x1, y1) of a tile, clipped to the slide."""
        level, col, row = key
        span = self.tile_px * 2**level
        return (col * span, row * span, min((col + 1) * span, self.width), min((row + 1) * span, self.height))

    def keys_in(self, level: int, x0: float, y0: float, x1: float, y1: float) -> list[tuple[int, int, int]]:
        """Tiles of ``level`` meeting the level-0 rectangle, row by row."""
        span = self.tile_px * 2**level
        cols, rows = self.grid(level)
        c0, c1 = max(0, int(x0 // span)), min(cols - 1, int(math.ceil(x1 / span)) - 1)
        r0, r1 = max(0, int(y0 // span)), min(rows - 1, int(math.ceil(y1 / span)) - 1)
        return [(level, c, r) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]

    # ------------------------------------------------------------------------------------------------ tiles
    def tile(self, key: tuple[int, int, int]) -> QImage | None:
        """The tile if it is in memory; tiles of the top level are cut from the base image on first use."""
        img = self.cache.get(key)
        if img is not None:
            return img
        if key[0] == self.top_level:
            x0, y0, x1, y1 = self.tile_rect(key)
            t = self.tile_px
            crop = self.base.copy(QRect(key[1] * t, key[2] * t, math.ceil((x1 - x0) / 2**key[0]),
                                        math.ceil((y1 - y0) / 2**key[0])))
            return self.cache.put(key, crop, nbytes=crop.sizeInBytes())
        if key in self._failed:
            return self._damaged_tile(key)
        return None

    def failed(self, key) -> bool:
        return key in self._failed

    def request_view(self, x0: float, y0: float, x1: float, y1: float, ds: float) -> int:
        """Queue the tiles a view of the level-0 rectangle at ``ds`` needs, most urgent first; returns how many
        were queued. Replaces whatever this source still had waiting."""
        if self._closed:
            return 0
        level = self.level_for(ds)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        span = self.tile_px * 2**level
        wanted: list[tuple[float, tuple[int, int, int]]] = []
        visible = self.keys_in(level, x0, y0, x1, y1)
        seen = set(visible)

        def centre_distance(key):
            rx0, ry0, rx1, ry1 = self.tile_rect(key)
            return math.hypot((rx0 + rx1) / 2 - cx, (ry0 + ry1) / 2 - cy)

        for rank, key in enumerate(sorted(visible, key=centre_distance)):
            wanted.append((0.0 + rank * 1e-4, key))
        if level + 1 <= self.top_level:
            for rank, key in enumerate(self.keys_in(level + 1, x0, y0, x1, y1)):
                wanted.append((1.0 + rank * 1e-4, key))
        ring = [k for k in self.keys_in(level, x0 - span, y0 - span, x1 + span, y1 + span) if k not in seen]
        for rank, key in enumerate(sorted(ring, key=centre_distance)):
            wanted.append((2.0 + rank * 1e-4, key))
        if level > 0:  # the central half at the next finer level: where a zoom-in will land
            qx, qy = (x1 - x0) / 4, (y1 - y0) / 4
            for rank, key in enumerate(self.keys_in(level - 1, cx - qx, cy - qy, cx + qx, cy + qy)):
                wanted.append((3.0 + rank * 1e-4, key))
        jobs = [(p, key, partial(self._load, key)) for p, key in wanted
                if key[0] != self.top_level and key not in self._failed and key not in self.cache]
        self.jobs.submit(self, jobs)
        return len(jobs)

    def _load(self, key: tuple[int, int, int]) -> None:
        """Reader thread: read, convert, cache, tell the GUI thread."""
        if self._closed:
            return
        x0, y0, x1, y1 = self.tile_rect(key)
        d = 2**key[0]
        out_w, out_h = max(1, math.ceil((x1 - x0) / d)), max(1, math.ceil((y1 - y0) / d))
        try:
            rgb = read_scaled_bounded(self.slide, x0, y0, x1 - x0, y1 - y0, out_w, out_h)
        except CervixFMError as exc:
            self._mail.post(("failed", key, str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - a damaged file can raise anything from a decoder
            if self._closed:
                return
            log.exception("reading tile %s of %s", key, self.slide.path)
            self._mail.post(("failed", key, f"{self.slide.path.name}: cannot read a region ({exc})."))
            return
        img = rgb_to_qimage(rgb)
        self.cache.put(key, img, nbytes=img.sizeInBytes())
        self.reads += 1
        self._mail.post(("tile", key, None))

    def _on_arrived(self) -> None:
        messages = []
        for kind, key, message in self._mail.take():
            if kind == "failed" and key not in self._failed:
                self._failed[key] = message
                messages.append(message)
        if messages:
            self.readFailed.emit(messages[0] if len(messages) == 1
                                 else f"{messages[0]} (and {len(messages) - 1} more damaged regions)")
        self.tilesArrived.emit()

    def _damaged_tile(self, key) -> QImage:
        """A hatched grey tile for a region that cannot be read, so the failure is visible and not retried."""
        x0, y0, x1, y1 = self.tile_rect(key)
        d = 2**key[0]
        img = QImage(max(1, math.ceil((x1 - x0) / d)), max(1, math.ceil((y1 - y0) / d)), QImage.Format.Format_RGB32)
        img.fill(QColor(200, 200, 200))
        arr = np.ndarray((img.height(), img.bytesPerLine() // 4), np.uint32, img.bits())
        yy, xx = np.mgrid[: img.height(), : img.width()]
        arr[:, : img.width()][((xx + yy) // 6) % 4 == 0] = 0xFFB0B0B0
        return self.cache.put(key, img, nbytes=img.sizeInBytes())

    def is_idle(self) -> bool:
        return self.jobs.idle()

    # ------------------------------------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Stop reading (bounded wait for reads in progress), drop the cache and close the slide."""
        if self._closed:
            return
        self._closed = True
        stopped = self.jobs.shutdown(timeout=3.0)
        self.cache.clear()
        if not stopped:  # a reader is stuck in the decoder: leaking the handle beats closing it under the reader
            log.warning("tile readers of %s did not stop; the slide is left open", self.slide.path)
            return
        try:
            self.slide.close()
        except SlideError:
            pass
