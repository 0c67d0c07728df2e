"""A contact sheet of search hits: the query and its neighbours side by side, each captioned, as one RGB image.

A list of coordinates says little to a cytologist; thumbnails of the hits are how a reviewer judges whether the
neighbours really look alike. Pixels come from where each row points: a slide region (read at the index's tile
resolution) or an atlas image file. A hit whose source cannot be read gets a grey tile saying so instead of failing
the whole sheet.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..errors import CervixFMError
from ..io import atomic_write

CAPTION_PX = 30
PAD = 4


def hit_pixels(record: dict[str, Any], size: int, data_root: str | os.PathLike | None, slides: dict) -> np.ndarray | None:
    """The hit's crop as ``size`` x ``size`` RGB, or None when its slide or image cannot be read."""
    try:
        if record.get("slide") and record.get("w"):
            from ..slides import open_slide

            path = record["slide"]
            if path not in slides:
                slides[path] = open_slide(path)
            return slides[path].read_scaled(record["x"], record["y"], record["w"], record["h"], size, size)
        if record.get("name") and data_root:
            from ..images import read_rgb

            return _fit(read_rgb(Path(data_root) / record["name"]), size)
    except CervixFMError:
        return None
    return None


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _caption(record: dict[str, Any], size: int) -> list[str]:
    """Rank and distance, then the label and where the hit comes from (slide stem, else image file name), cut to the
    thumbnail width (PIL's default font is about 6 px a character)."""
    first = f"#{record['rank']}  d={record['distance']:.3f}"
    label = record.get("label") or ""
    where = Path(record["slide"]).stem if record.get("slide") else (Path(record["name"]).name if record.get("name") else "")
    second = f"[{label}] {where}" if label else where
    return [first, second[:max(4, size // 6)]]


def contact_sheet(records: Sequence[dict[str, Any]], query: np.ndarray | None = None, size: int = 128,
                  columns: int = 6, data_root: str | os.PathLike | None = None, title: str = "query") -> np.ndarray:
    """The sheet as an (H, W, 3) uint8 array: the query first (when given), then the hits in rank order."""
    cells: list[tuple[np.ndarray | None, list[str]]] = []
    if query is not None:
        cells.append((_fit(np.asarray(query, np.uint8), size), [title, ""]))
    slides: dict = {}
    try:
        for rec in records:
            cells.append((hit_pixels(rec, size, data_root, slides), _caption(rec, size)))
    finally:
        for slide in slides.values():
            with contextlib.suppress(Exception):
                slide.close()
    columns = max(1, min(columns, len(cells) or 1))
    rows = max(1, -(-len(cells) // columns))
    cell_w, cell_h = size + 2 * PAD, size + CAPTION_PX + 2 * PAD
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (pixels, caption) in enumerate(cells):
        x0, y0 = (i % columns) * cell_w + PAD, (i // columns) * cell_h + PAD
        if pixels is None:
            draw.rectangle([x0, y0, x0 + size - 1, y0 + size - 1], fill=(200, 200, 200))
            draw.text((x0 + 6, y0 + size // 2 - 6), "not readable", fill=(80, 80, 80))
        else:
            sheet.paste(Image.fromarray(np.ascontiguousarray(pixels)), (x0, y0))
        if i == 0 and query is not None:
            draw.rectangle([x0 - 2, y0 - 2, x0 + size + 1, y0 + size + 1], outline=(220, 40, 40), width=2)
        for line_no, text in enumerate(caption):
            draw.text((x0, y0 + size + 2 + 13 * line_no), text, fill=(0, 0, 0))
    return np.asarray(sheet)


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    with atomic_write(path, "wb") as handle:
        Image.fromarray(image).save(handle, format="PNG")
