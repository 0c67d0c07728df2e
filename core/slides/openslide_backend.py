"""Slides read through OpenSlide (SVS, NDPI, MRXS, SCN, tiled TIFF, DICOM, ...).

Two things matter beyond wrapping the library. Speed: OpenSlide decodes into premultiplied ARGB and
openslide-python then un-premultiplies into a PIL image; we call the same C function into a numpy buffer and
composite on white with one add, which is cheaper than the library's own ``read_region``, and the call releases
the GIL so reader threads run in parallel. Robustness: an OpenSlide handle latches its first error and refuses
every later call, so one damaged tile would kill the slide; we swap in a fresh handle and report only the damaged
region.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from ..errors import SlideError
from .slide import Slide

_OPEN_LOCK = threading.Lock()


def openslide_vendor(path: Path) -> str | None:
    """OpenSlide's format name for ``path``, or None when OpenSlide does not claim it."""
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:  # noqa: BLE001 - a probe: any failure means "not for OpenSlide"
        return None


def _fast_reader():
    """OpenSlide's C ``read_region`` if this openslide-python exposes it, else None (then the public API is used)."""
    try:
        from openslide import lowlevel

        func = lowlevel._read_region  # noqa: SLF001 - same call the library makes, minus its PIL conversion
        return func if callable(func) else None
    except (ImportError, AttributeError):
        return None


_READ = _fast_reader()


class OpenSlideSlide(Slide):
    backend = "openslide"

    def __init__(self, path: Path, vendor: str, mpp=None) -> None:
        super().__init__(path, mpp)
        self.vendor = vendor
        self._lock = threading.Lock()
        self._closed = False
        self._osr = self._open()
        osr = self._osr
        self.level_dimensions = tuple(tuple(int(v) for v in d) for d in osr.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in osr.level_downsamples)
        self.properties = dict(osr.properties)
        if not self.level_dimensions or min(self.level_dimensions[0]) <= 0:
            raise SlideError(f"{path}: the slide has no pixels (size {self.level_dimensions[:1]}).")
        props = self.properties
        self._set_mpp((_float(props.get("openslide.mpp-x")), _float(props.get("openslide.mpp-y"))))
        self.objective_power = _float(props.get("openslide.objective-power"))
        w, h = self.dimensions
        bx = int(_float(props.get("openslide.bounds-x")) or 0)
        by = int(_float(props.get("openslide.bounds-y")) or 0)
        bw = int(_float(props.get("openslide.bounds-width")) or w - bx)
        bh = int(_float(props.get("openslide.bounds-height")) or h - by)
        self.bounds = (bx, by, bw, bh)
        self._associated_names = tuple(sorted(osr.associated_images.keys()))

    def _open(self):
        import openslide

        try:
            with _OPEN_LOCK:
                return openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise SlideError(f"{self.path}: OpenSlide does not support this file ({exc}).") from exc
        except openslide.OpenSlideError as exc:
            raise SlideError(f"{self.path}: the slide is damaged or incomplete; OpenSlide reported: {exc}") from exc

    # ---------------------------------------------------------------------------------------------- pixels
    def _read_level_region(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        import openslide

        for attempt in (0, 1):
            osr = self._handle()
            try:
                return _read(osr, x, y, level, w, h)
            except openslide.OpenSlideError as exc:
                # The handle is now latched in error. Replace it so other regions stay readable, then retry once:
                # the error may have been another thread's damaged tile poisoning the shared handle.
                self._replace(osr)
                if attempt:
                    raise SlideError(
                        f"{self.path}: cannot read level {level} region x={x} y={y} {w}x{h}: the tile data is "
                        f"damaged ({exc}). Other regions of the slide are still readable.") from exc
        raise AssertionError("unreachable")

    def _handle(self):
        osr = self._osr
        if osr is None:
            raise SlideError(f"{self.path}: the slide was closed.")
        return osr

    def _replace(self, broken) -> None:
        with self._lock:
            if self._osr is broken and not self._closed:
                # The broken handle is not closed here: another thread may still be inside a C call on it. It is
                # freed when the last reference goes away.
                self._osr = self._open()

    # ----------------------------------------------------------------------------------------- associated
    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return self._associated_names

    def associated_image_size(self, name: str) -> tuple[int, int]:
        w = _float(self.properties.get(f"openslide.associated.{name}.width"))
        h = _float(self.properties.get(f"openslide.associated.{name}.height"))
        if w and h:
            return int(w), int(h)
        return super().associated_image_size(name)

    def _associated(self, name: str) -> np.ndarray:
        import openslide

        osr = self._handle()
        try:
            return _composite_rgba(np.asarray(osr.associated_images[name]))
        except openslide.OpenSlideError as exc:
            self._replace(osr)
            raise SlideError(f"{self.path}: the {name} image is damaged ({exc}).") from exc

    def close(self) -> None:
        """Release the file. Call it only when no other thread is reading (as with OpenSlide itself)."""
        with self._lock:
            self._closed = True
            osr, self._osr = self._osr, None
        if osr is not None:
            osr.close()


def _read(osr, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
    if _READ is None:
        return _composite_rgba(np.asarray(osr.read_region((x, y), level, (w, h))))
    buf = np.empty((h, w), np.uint32)
    _READ(osr._osr, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), x, y, level, w, h)  # noqa: SLF001
    return _composite_argb(buf)


def _composite_argb(buf: np.ndarray) -> np.ndarray:
    """Premultiplied native-endian ARGB -> RGB on white: over white, a premultiplied colour c becomes c + 255 - a."""
    h, w = buf.shape
    bgra = buf.view(np.uint8).reshape(h, w, 4)
    if np.little_endian:
        b, g, r, a = 0, 1, 2, 3
    else:  # pragma: no cover - big-endian hosts
        a, r, g, b = 0, 1, 2, 3
    out = np.empty((h, w, 3), np.uint8)
    out[..., 0] = bgra[..., r]
    out[..., 1] = bgra[..., g]
    out[..., 2] = bgra[..., b]
    if buf.min() < 0xFF000000:  # some pixel is not opaque
        out += (255 - bgra[..., a])[..., None]
    return out


def _composite_rgba(rgba: np.ndarray) -> np.ndarray:
    """Straight (non-premultiplied) RGBA from Pillow -> RGB on white."""
    if rgba.ndim == 2:
        return np.repeat(rgba[..., None], 3, axis=2)
    if rgba.shape[2] == 3:
        return np.ascontiguousarray(rgba)
    rgb = rgba[..., :3]
    alpha = rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    blended = (rgb.astype(np.uint16) * alpha + 255 * (255 - alpha.astype(np.uint16)) + 127) // 255
    return blended.astype(np.uint8)


def _float(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
