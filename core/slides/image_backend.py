"""Plain images (PNG, JPEG, BMP, non-pyramidal TIFF, ...) seen as one-level slides.

Camera snapshots and exported crops are small enough to hold in memory, so the image is decoded once into an RGB
array and every read is a slice: cheap and naturally thread-safe. Large files beyond Pillow's decompression-bomb
guard are allowed up to a share of physical memory, because a pathologist's 20k x 20k PNG export is not an attack.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import SlideError
from .memory import physical_memory_bytes
from .slide import Slide

_PIL_GUARD = threading.Lock()
#: A plain image may take at most this share of physical memory once decoded to RGB.
MAX_MEMORY_SHARE = 0.5


class ImageSlide(Slide):
    backend = "image"

    def __init__(self, path: Path, mpp=None) -> None:
        super().__init__(path, mpp)
        rgb, fmt, dpi = _decode(path)
        self._rgb = rgb
        self._rgb.setflags(write=False)
        self.vendor = f"image/{fmt.lower()}"
        h, w = rgb.shape[:2]
        self.level_dimensions = ((w, h),)
        self.level_downsamples = (1.0,)
        self.bounds = (0, 0, w, h)
        self.properties = {"image.format": fmt, "image.width": str(w), "image.height": str(h)}
        file_mpp = (None, None)
        if dpi:
            self.properties["image.dpi"] = f"{dpi[0]:g},{dpi[1]:g}"
            if dpi[0] > 0 and dpi[1] > 0:
                file_mpp = (25400.0 / dpi[0], 25400.0 / dpi[1])
        self._set_mpp(file_mpp)

    def _read_level_region(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        img = self._rgb
        if img is None:
            raise SlideError(f"{self.path}: the slide was closed.")
        ih, iw = img.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, iw), min(y + h, ih)
        if x == 0 and y == 0 and (w, h) == (iw, ih):
            return img.copy()
        out = np.full((h, w, 3), 255, np.uint8)
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = img[y0:y1, x0:x1]
        return out

    def close(self) -> None:
        self._rgb = None


def _decode(path: Path) -> tuple[np.ndarray, str, tuple[float, float] | None]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    budget = int(physical_memory_bytes() * MAX_MEMORY_SHARE)
    try:
        with _PIL_GUARD:  # Pillow's bomb limit is global; lift it only around our own open()
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                img = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError as exc:
        raise SlideError(
            f"{path}: not a slide or image format CervixFM can read (neither OpenSlide nor Pillow recognises it). "
            "Check that the file is really a slide scan or an image and that its extension matches.") from exc
    except OSError as exc:
        raise SlideError(f"{path}: cannot be read as an image ({exc}).") from exc
    with img:
        fmt = img.format or path.suffix.lstrip(".").upper() or "unknown"
        w, h = img.size
        if w <= 0 or h <= 0:
            raise SlideError(f"{path}: the image has zero size ({w}x{h}).")
        if w * h * 3 > budget:
            raise SlideError(
                f"{path}: a plain {fmt} image of {w}x{h} pixels needs {w * h * 3 / 2**30:.1f} GiB in memory, more "
                f"than this computer allows ({budget / 2**30:.1f} GiB). Convert it to a tiled pyramidal TIFF.")
        dpi = img.info.get("dpi")
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
        except (OSError, ValueError, SyntaxError) as exc:
            raise SlideError(f"{path}: the {fmt} image is damaged or truncated ({exc}).") from exc
    if dpi is not None:
        try:
            dpi = (float(dpi[0]), float(dpi[1]))
        except (TypeError, ValueError, IndexError):
            dpi = None
    return rgb, fmt, dpi


def _to_rgb(img) -> np.ndarray:
    """Any Pillow mode -> RGB uint8; transparency is composited on white like the OpenSlide backend does."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        top = max(int(arr.max()), 1)
        scale = 255.0 / (65535 if top > 255 else 255)
        gray = np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        gray = ((arr - lo) / max(hi - lo, 1e-12) * 255 + 0.5).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.array(img.convert("RGB"))
