"""The one slide interface every reader of pixels uses, and ``open_slide`` that picks a backend for a file.

A viewer streaming tiles, an analysis pipeline with reader threads and the CLI all see the same ``Slide``: level-0
pixel coordinates, RGB ``uint8`` arrays, and honest metadata (where the microns-per-pixel came from matters, because
missing or wrong MPP is the most common silent failure with whole-slide images).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import SlideError

#: Microns per pixel assumed when a file carries none: a 40x scan. ``Slide.mpp_source`` is then ``"fallback"`` so a
#: UI can warn, and ``open_slide(path, mpp=...)`` lets the user say the truth.
DEFAULT_MPP = 0.25

#: MPP values outside this range are metadata garbage (a 72-1200 dpi "screen" or scanner resolution), not a
#: microscope; 20 µm/px is about a 0.5x overview.
PLAUSIBLE_MPP = (0.02, 20.0)

MPP_SOURCES = ("file", "user", "fallback")


class Slide(ABC):
    """A whole-slide image (or a plain image seen as a one-level slide).

    Subclasses fill the metadata attributes in ``__init__`` and implement ``_read_level_region`` and
    ``_associated``; everything else (level choice, scaled reads, thumbnails, metadata) is shared so both backends
    behave the same. All methods are safe to call from several threads at once.
    """

    backend: str = ""
    #: Short format name: an OpenSlide vendor (``aperio``, ``generic-tiff``, ...) or ``image/png`` etc.
    vendor: str = ""

    def __init__(self, path: Path, mpp: tuple[float, float] | float | None = None) -> None:
        self.path = Path(path)
        self.level_dimensions: tuple[tuple[int, int], ...] = ()
        self.level_downsamples: tuple[float, ...] = ()
        self.properties: Mapping[str, str] = {}
        self.objective_power: float | None = None
        self.bounds: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.mpp: tuple[float, float] = (DEFAULT_MPP, DEFAULT_MPP)
        self.mpp_source = "fallback"
        self.mpp_note = ""
        self._user_mpp = _normalise_user_mpp(mpp, self.path)

    # ----------------------------------------------------------------------------------------------- metadata
    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def magnification(self) -> float:
        """Objective power from the file, else estimated from MPP (10 µm / mpp: 0.25 µm/px is 40x)."""
        if self.objective_power:
            return float(self.objective_power)
        return 10.0 / self.mpp[0]

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return ()

    def _set_mpp(self, file_mpp: tuple[float | None, float | None]) -> None:
        """Decide MPP: the user's override wins, then plausible file metadata, then the documented fallback."""
        if self._user_mpp is not None:
            self.mpp, self.mpp_source = self._user_mpp, "user"
            return
        mx, my = file_mpp
        if mx is not None and my is None:
            my = mx
        if my is not None and mx is None:
            mx = my
        lo, hi = PLAUSIBLE_MPP
        if mx is not None and my is not None and lo <= mx <= hi and lo <= my <= hi:
            self.mpp, self.mpp_source = (float(mx), float(my)), "file"
            return
        if mx is not None:
            self.mpp_note = f"the file's MPP ({mx:g}, {my:g}) is implausible for a microscope and was ignored"
        else:
            self.mpp_note = "the file has no microns-per-pixel metadata"
        self.mpp, self.mpp_source = (DEFAULT_MPP, DEFAULT_MPP), "fallback"

    def metadata(self) -> dict[str, Any]:
        """Everything a person or a results file needs to know about the slide, JSON-serialisable."""
        w, h = self.dimensions
        return {
            "path": str(self.path),
            "backend": self.backend,
            "vendor": self.vendor,
            "width": w,
            "height": h,
            "mpp_x": self.mpp[0],
            "mpp_y": self.mpp[1],
            "mpp_source": self.mpp_source,
            "mpp_note": self.mpp_note,
            "objective_power": self.objective_power,
            "magnification": self.magnification,
            "bounds": list(self.bounds),
            "levels": [
                {"level": i, "width": d[0], "height": d[1], "downsample": ds,
                 "mpp_x": self.mpp[0] * ds, "mpp_y": self.mpp[1] * ds}
                for i, (d, ds) in enumerate(zip(self.level_dimensions, self.level_downsamples))
            ],
            "associated_images": {name: list(self.associated_image_size(name)) for name in self.associated_image_names},
            "properties": dict(self.properties),
        }

    # ------------------------------------------------------------------------------------------------- pixels
    @abstractmethod
    def _read_level_region(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """Return (h, w, 3) uint8 RGB; pixels outside the image are white. Arguments are already validated."""

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Pixels of ``level`` whose top-left is ``location`` in level-0 coordinates, as (h, w, 3) RGB uint8.

        Same convention as OpenSlide: ``size`` is in pixels of ``level``. Areas outside the slide (and transparent
        scanner background) come back white, so downstream code never sees alpha.
        """
        x, y = int(location[0]), int(location[1])
        w, h = int(size[0]), int(size[1])
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range: {self.path.name} has {self.level_count} level(s)")
        if w < 0 or h < 0:
            raise ValueError(f"negative region size {w}x{h}")
        if w == 0 or h == 0:
            return np.full((h, w, 3), 255, np.uint8)
        return self._read_level_region(x, y, level, w, h)

    def level_for_downsample(self, downsample: float) -> int:
        """The most detailed level that is not finer than needed: reading it then shrinking loses nothing.

        A 0.5% tolerance keeps a level whose downsample is 4.0001 usable for a request of exactly 4.
        """
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.005:
                best = i
        return best

    def read_scaled(self, x: float, y: float, w0: float, h0: float, out_w: int, out_h: int) -> np.ndarray:
        """The level-0 rectangle (x, y, w0, h0) resampled to (out_h, out_w, 3), read from the best pyramid level."""
        ds = min(w0 / out_w, h0 / out_h)
        level = self.level_for_downsample(ds)
        lds = self.level_downsamples[level]
        lw = max(1, int(math.ceil(w0 / lds - 1e-6)))
        lh = max(1, int(math.ceil(h0 / lds - 1e-6)))
        region = self.read_region((int(round(x)), int(round(y))), level, (lw, lh))
        if (lw, lh) == (out_w, out_h):
            return region
        return resize_rgb(region, out_w, out_h)

    def overview(self, downsample: float, chunk: int = 4096) -> np.ndarray:
        """The whole slide at ``downsample`` (level-0 px per output px), read in chunks so memory stays bounded.

        Works for single-level files of any size: each chunk is read from the best level and shrunk on its own.
        """
        w, h = self.dimensions
        out_w = max(1, int(round(w / downsample)))
        out_h = max(1, int(round(h / downsample)))
        level = self.level_for_downsample(downsample)
        lds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        if max(lw, lh) <= chunk:
            region = self.read_region((0, 0), level, (lw, lh))
            return region if (lw, lh) == (out_w, out_h) else resize_rgb(region, out_w, out_h)
        out = np.empty((out_h, out_w, 3), np.uint8)
        step = max(1, int(chunk * lds / downsample))  # output px per chunk
        for oy in range(0, out_h, step):
            for ox in range(0, out_w, step):
                cw, ch = min(step, out_w - ox), min(step, out_h - oy)
                out[oy:oy + ch, ox:ox + cw] = self.read_scaled(
                    ox * downsample, oy * downsample, cw * downsample, ch * downsample, cw, ch)
        return out

    def thumbnail(self, max_px: int = 1024) -> np.ndarray:
        """The whole slide shrunk so its longer side is at most ``max_px``; aspect ratio kept."""
        w, h = self.dimensions
        ds = max(1.0, max(w, h) / float(max_px))
        return self.overview(ds)

    # ----------------------------------------------------------------------------------------- associated
    def associated_image(self, name: str) -> np.ndarray:
        """Label, macro, thumbnail...: the images a scanner stores beside the pyramid, as RGB uint8."""
        if name not in self.associated_image_names:
            have = ", ".join(self.associated_image_names) or "none"
            raise SlideError(f"{self.path}: no associated image {name!r} (this slide has: {have}).")
        return self._associated(name)

    def associated_image_size(self, name: str) -> tuple[int, int]:
        a = self.associated_image(name)
        return a.shape[1], a.shape[0]

    def _associated(self, name: str) -> np.ndarray:  # pragma: no cover - only backends with images override
        raise SlideError(f"{self.path}: no associated image {name!r}")

    # ---------------------------------------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Release the file; reading afterwards is an error."""

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions if self.level_dimensions else (0, 0)
        return f"<{type(self).__name__} {self.path.name} {w}x{h} levels={self.level_count} mpp={self.mpp[0]:.4g}>"


def resize_rgb(region: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Antialiased resize (Pillow's bilinear filter widens its support when shrinking)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(region))
    return np.asarray(img.resize((out_w, out_h), Image.Resampling.BILINEAR, reducing_gap=None))


def _normalise_user_mpp(mpp, path: Path) -> tuple[float, float] | None:
    if mpp is None:
        return None
    if isinstance(mpp, (int, float)):
        mpp = (float(mpp), float(mpp))
    mx, my = (float(v) for v in mpp)
    if not (mx > 0 and my > 0 and math.isfinite(mx) and math.isfinite(my)):
        raise SlideError(f"{path}: microns per pixel must be positive numbers, got {mpp!r}.")
    return mx, my


def check_file(path: str | os.PathLike) -> Path:
    """Reject the usual user mistakes with a message that names the file and says what is wrong."""
    p = Path(path).expanduser()
    if not p.exists():
        hint = ""
        if p.parent.is_dir():
            similar = sorted(q.name for q in p.parent.iterdir() if q.stem.lower() == p.stem.lower())[:3]
            if similar:
                hint = f" Did you mean: {', '.join(similar)}?"
        raise SlideError(f"{p}: file not found. Check the path.{hint}")
    if p.is_dir():
        raise SlideError(f"{p}: is a folder, not a slide file. Give the path of the slide file inside it "
                         "(for MRXS the .mrxs file, for DICOM one .dcm file of the series).")
    try:
        size = p.stat().st_size
        with open(p, "rb") as handle:
            handle.read(1)
    except PermissionError as exc:
        raise SlideError(f"{p}: permission denied; make the file readable.") from exc
    except OSError as exc:
        raise SlideError(f"{p}: cannot be read ({exc.strerror or exc}).") from exc
    if size == 0:
        raise SlideError(f"{p}: the file is empty (0 bytes); the copy or export is incomplete.")
    return p


def open_slide(path: str | os.PathLike, mpp: tuple[float, float] | float | None = None) -> Slide:
    """Open any slide OpenSlide reads (SVS, NDPI, MRXS, SCN, tiled TIFF, DICOM, ...) or a plain image.

    ``mpp`` overrides the file's microns per pixel (for files without it or with a wrong value). Every failure a
    user can cause raises ``SlideError`` with the file name and the problem.
    """
    from .integrity import tiff_problem

    p = check_file(path)
    problem = tiff_problem(p)
    if problem:
        raise SlideError(f"{p}: {problem}")

    from .openslide_backend import OpenSlideSlide, openslide_vendor

    vendor = openslide_vendor(p)
    if vendor is not None:
        return OpenSlideSlide(p, vendor, mpp=mpp)

    from .image_backend import ImageSlide

    return ImageSlide(p, mpp=mpp)
