"""Whole-slide access: ``open_slide(path) -> Slide`` over OpenSlide formats and plain images, tiling at a target
MPP, cytology foreground (cell-bearing area) detection, and a byte-bounded tile cache.

Coordinates are level-0 pixels (x, y) from the top-left; pixels are RGB ``uint8`` arrays (H, W, 3).
"""

from .cache import CacheStats, TileCache, default_cache_bytes
from .foreground import ForegroundMask, detect_foreground
from .slide import DEFAULT_MPP, Slide, open_slide
from .tiling import Tile, TileGrid

__all__ = [
    "DEFAULT_MPP",
    "CacheStats",
    "ForegroundMask",
    "Slide",
    "Tile",
    "TileCache",
    "TileGrid",
    "default_cache_bytes",
    "detect_foreground",
    "open_slide",
]
