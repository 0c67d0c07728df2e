"""Regenerate the README pictures of a synthetic Pap smear (docs/images/synthetic_*.png).

Writes a 16384 x 16384 synthetic slide to a temporary folder with the same code path as ``cervixfm demo-slide``,
opens it through ``core.slides.open_slide`` (OpenSlide), and saves a 40x region around a koilocyte with its
neighbours and a low-magnification overview. Both are palette PNGs so they stay small enough for a README.

Usage: python docs/make_slide_images.py [--seed 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _save(rgb: np.ndarray, path: Path) -> int:
    from PIL import Image

    img = Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    img.save(path, optimize=True)
    return path.stat().st_size


def _busiest_window(cells: np.ndarray, w: int, h: int, width: int, height: int) -> tuple[int, int]:
    """Top-left of a w x h window centred near a koilocyte that also shows as many other classes as possible."""
    from core.synthetic.classes import LSIL

    best, best_xy = -1.0, (0, 0)
    for rec in cells[cells["cls"] == LSIL]:
        x0 = int(np.clip(rec["c_x"] - w / 2, 0, width - w))
        y0 = int(np.clip(rec["c_y"] - h / 2, 0, height - h))
        inside = cells[(cells["c_x"] > x0 + 40) & (cells["c_x"] < x0 + w - 40) & (cells["c_y"] > y0 + 40) &
                       (cells["c_y"] < y0 + h - 40)]
        near = np.hypot(cells["c_x"] - rec["c_x"], cells["c_y"] - rec["c_y"]) < 1.3 * rec["c_r"]
        clear = near.sum() <= 1  # nothing lies over the koilocyte's halo
        score = len(set(inside["cls"].tolist())) + 0.02 * min(len(inside), 25) + 3 * clear
        if score > best:
            best, best_xy = score, (x0, y0)
    return best_xy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = ap.parse_args()

    from core.slides import open_slide
    from core.synthetic import build, generate_slide

    size = 16384
    kwargs = dict(seed=args.seed, abnormal_fraction=0.08, cellularity=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        info = generate_slide(Path(tmp) / "readme.tiff", size, size, geojson=False, **kwargs)
        _, layout, _ = build(size, size, **kwargs)
        with open_slide(info.path) as slide:
            w, h = 960, 640
            x0, y0 = _busiest_window(layout.cells, w, h, size, size)
            region = slide.read_region((x0, y0), 0, (w, h))
            overview = slide.thumbnail(1024)
    args.out.mkdir(parents=True, exist_ok=True)
    a = _save(region, args.out / "synthetic_region_40x.png")
    b = _save(overview, args.out / "synthetic_overview.png")
    print(f"region x={x0} y={y0} {w}x{h} at 0.25 µm/px: {a / 1024:.0f} KiB; overview 1024 px: {b / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
