"""The paper label of a synthetic slide: a few lines of text and a 2-D code pattern, as a scanner photographs it."""

from __future__ import annotations

import numpy as np


def make_label(lines: list[str], seed: int, size: int = 300) -> np.ndarray:
    """RGB uint8 (size, size, 3): a data-matrix-like block (deterministic for ``seed``) above the text lines."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (size, size), (250, 250, 246))
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng(seed)
    cells = 14
    cell = size // 32
    code = rng.random((cells, cells)) < 0.5
    code[:, 0] = True
    code[-1, :] = True
    code[0, ::2] = True
    code[::2, -1] = True
    x0 = y0 = size // 12
    for r in range(cells):
        for c in range(cells):
            if code[r, c]:
                draw.rectangle([x0 + c * cell, y0 + r * cell, x0 + (c + 1) * cell - 1, y0 + (r + 1) * cell - 1],
                               fill=(20, 20, 20))
    try:
        font = ImageFont.load_default(size=max(10, size // 14))
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    y = y0 + cells * cell + size // 20
    for line in lines:
        draw.text((x0, y), line, fill=(10, 10, 60), font=font)
        y += max(12, size // 12)
    return np.asarray(img)
