"""Thumbnails of slide regions and image files, read off the GUI thread for the galleries.

A gallery shows hundreds of cells, each a small region of a (possibly other) slide or an atlas's image file, and
must never wait for one. ``ThumbnailLoader.request`` queues the pictures a gallery has on screen on two shared
threads (separate from the slide view's tile readers); each request replaces what that loader still had waiting,
so fast scrolling never reads rows already gone. Read thumbnails go into a byte-bounded cache keyed by what they
show, so switching lists or filters reuses them, and a picture that cannot be read is remembered as such instead
of being retried. A loader opens its own slide handles (hits may lie on other slides, or on a slide the view has
closed) and closes them once the reads in progress are done.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from functools import partial
from typing import Any, Sequence

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from core.errors import CervixFMError
from core.slides import TileCache

from .tile_source import rgb_to_qimage
from .workers import JobQueue, Mailbox

log = logging.getLogger(__name__)

THUMB_PX = 104
THUMB_CACHE_BYTES = 96 * 2**20

_THUMBNAIL_QUEUE: JobQueue | None = None


def thumbnail_queue() -> JobQueue:
    """The two threads every gallery reads thumbnails on (separate from the slide view's tile readers)."""
    global _THUMBNAIL_QUEUE
    if _THUMBNAIL_QUEUE is None:
        _THUMBNAIL_QUEUE = JobQueue(2, "thumbnails")
    return _THUMBNAIL_QUEUE


# ------------------------------------------------------------------------------------------------- pictures
@dataclasses.dataclass(frozen=True)
class SlideRegion:
    """A level-0 rectangle of a slide file."""

    path: str
    x: float
    y: float
    w: float
    h: float


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """An image file (an atlas's labelled crop)."""

    path: str


Picture = SlideRegion | ImageFile


def fit_size(w: float, h: float, size: int) -> tuple[int, int]:
    """Output pixels of a ``w`` x ``h`` region shown in a ``size`` square, aspect kept."""
    scale = size / max(w, h, 1e-9)
    return max(1, round(w * scale)), max(1, round(h * scale))


class _SlidePool:
    """Slide handles opened on the reader threads and shared by them, closed once nobody reads them.

    A gallery outlives the slide it shows (hits on other slides, a closed slide), so it opens its own handles
    instead of borrowing the view's; ``retire`` closes them when the last read in progress finishes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slides: dict[str, Any] = {}
        self._users: dict[str, int] = {}
        self._retired = False

    def read(self, region: SlideRegion, out_w: int, out_h: int) -> np.ndarray:
        from core.slides import open_slide

        with self._lock:
            if self._retired:
                raise _Retired()
            slide = self._slides.get(region.path)
            self._users[region.path] = self._users.get(region.path, 0) + 1
        try:
            if slide is None:
                opened = open_slide(region.path)
                with self._lock:
                    slide = self._slides.setdefault(region.path, opened)
                if slide is not opened:
                    opened.close()
            return slide.read_scaled(region.x, region.y, region.w, region.h, out_w, out_h)
        finally:
            with self._lock:
                self._users[region.path] -= 1
                close_now = self._retired and self._users[region.path] == 0
                slide = self._slides.pop(region.path, None) if close_now else None
            if slide is not None:
                _close_quietly(slide)

    def retire(self) -> None:
        with self._lock:
            self._retired = True
            idle = [p for p in self._slides if self._users.get(p, 0) == 0]
            slides = [self._slides.pop(p) for p in idle]
        for slide in slides:
            _close_quietly(slide)


class _Retired(Exception):
    """The gallery was reset while this read waited: drop it quietly (it is not a broken picture)."""


def _close_quietly(slide) -> None:
    try:
        slide.close()
    except Exception:  # noqa: BLE001 - closing must not raise on a damaged file
        pass


class ThumbnailLoader(QObject):
    """Reads thumbnails off the GUI thread; ``loaded`` fires (on the GUI thread) when some arrived."""

    loaded = Signal()

    def __init__(self, size: int = THUMB_PX, cache_bytes: int = THUMB_CACHE_BYTES,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.size = int(size)
        self.cache = TileCache(cache_bytes)
        self.failed: dict[Picture, str] = {}
        self._pool = _SlidePool()
        self._mail = Mailbox(self)
        self._mail.arrived.connect(self._arrived)
        self.reads = 0

    def image(self, picture: Picture) -> QImage | None:
        return self.cache.get(picture)

    def request(self, pictures: Sequence[Picture]) -> int:
        """Read these (most urgent first), replacing whatever this loader still had waiting; returns how many."""
        todo = []
        seen = set()
        for p in pictures:
            if p is None or p in seen or p in self.failed or p in self.cache:
                continue
            seen.add(p)
            todo.append(p)
        thumbnail_queue().submit(self, [(float(i), p, partial(self._load, p, self._pool)) for i, p in enumerate(todo)])
        return len(todo)

    def _load(self, picture: Picture, pool: _SlidePool) -> None:
        try:
            rgb = self._read(picture, pool)
        except _Retired:
            return
        except CervixFMError as exc:
            self._mail.post((picture, None, str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - a damaged file can make any decoder raise
            log.warning("thumbnail %s not readable: %s", picture, exc)
            self._mail.post((picture, None, f"not readable ({type(exc).__name__}: {exc})"))
            return
        self._mail.post((picture, rgb_to_qimage(rgb), None))

    def _read(self, picture: Picture, pool: _SlidePool) -> np.ndarray:
        if isinstance(picture, SlideRegion):
            return pool.read(picture, *fit_size(picture.w, picture.h, self.size))
        from PIL import Image

        from core.images import read_rgb

        rgb = read_rgb(picture.path)
        w, h = fit_size(rgb.shape[1], rgb.shape[0], self.size)
        return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))

    def _arrived(self) -> None:
        for picture, image, error in self._mail.take():
            if image is None:
                self.failed[picture] = error or "not readable"
            else:
                self.cache.put(picture, image, nbytes=image.sizeInBytes())
                self.reads += 1
        self.loaded.emit()

    def reset(self) -> None:
        """Forget waiting reads and close the slide handles once the reads in progress are done (the loader stays
        usable: later reads open fresh handles)."""
        thumbnail_queue().cancel(self)
        self._pool.retire()
        self._pool = _SlidePool()
