"""Reading ordinary image files (cell crops, PNG/JPEG tiles) as RGB uint8 arrays with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """H x W x 3 uint8. Alpha is dropped like PIL's ``convert('RGB')``, as the published training code does."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError as exc:
        raise InputError(f"Image {path} does not exist.") from exc
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"Cannot read image {path}: {exc}") from exc


def collect_images(inputs: list[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(display name, path) for every image in the given files and folders (recursively), sorted by name.

    A folder's images are named by their path relative to that folder, a file given directly by the path as typed.
    """
    found: list[tuple[str, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in p.rglob("*"):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                    found.append((f.relative_to(p).as_posix(), f))
        elif p.is_file():
            found.append((str(item), p))
        else:
            raise InputError(f"{item} does not exist (expected an image file or a folder of images).")
    found.sort(key=lambda t: (t[0], str(t[1])))
    return found
