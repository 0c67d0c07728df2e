"""Render the viewer offscreen on the demo slide and save screenshots to docs/images/viewer_*.png.

The demo slide is the one ``cervixfm-viewer`` generates on first start (``<cache>/demo``); it is generated here
if missing (about a minute). The overlays are built from the slide's synthetic ground truth, and say so in their
names: a heat map of abnormal (LSIL/HSIL) cells per 112 µm tile and every cell outlined in its class colour.
Model overlays (analysis, galleries) come from the analysis part of the viewer.

Usage: python docs/make_screenshots.py [--out docs/images] [--width 1600 --height 1000]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

MAX_BYTES = 300 * 1024
TILE_LEVEL0 = 448  # 224 px at 0.5 µm/px, the analysis tile


def ensure_demo() -> Path:
    from cervixfm_app.viewer import demo
    from core.synthetic import generate_slide

    if not demo.demo_slide_ready():
        path = demo.demo_slide_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating the demo slide {path} ...", flush=True)
        generate_slide(path, demo.DEMO_SIZE, demo.DEMO_SIZE, seed=demo.DEMO_SEED,
                       abnormal_fraction=demo.DEMO_ABNORMAL_FRACTION)
    return demo.demo_slide_path()


def abnormal_density(objects, size: tuple[int, int]):
    """TileScores of the share of LSIL/HSIL cells among the cells of each tile (NaN where a tile has none)."""
    from core.overlays import TileScores

    snap = objects.snapshot()
    b = snap.bounds_of(np.arange(len(snap)))
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    names = np.array(snap.class_names + ("",))
    cls = names[snap.classes_of(np.arange(len(snap))).astype(int)]
    abnormal = np.isin(cls, ["LSIL", "HSIL"])
    cols, rows = int(np.ceil(size[0] / TILE_LEVEL0)), int(np.ceil(size[1] / TILE_LEVEL0))
    ci = np.clip((cx // TILE_LEVEL0).astype(int), 0, cols - 1)
    ri = np.clip((cy // TILE_LEVEL0).astype(int), 0, rows - 1)
    total = np.zeros((rows, cols))
    bad = np.zeros((rows, cols))
    np.add.at(total, (ri, ci), 1)
    np.add.at(bad, (ri, ci), abnormal.astype(float))
    keep = total.ravel() > 0
    xs, ys = np.meshgrid(np.arange(cols) * TILE_LEVEL0, np.arange(rows) * TILE_LEVEL0)
    boxes = np.column_stack([xs.ravel(), ys.ravel(), np.full(xs.size, TILE_LEVEL0), np.full(xs.size, TILE_LEVEL0)])
    values = (bad.ravel() / np.maximum(total.ravel(), 1))[keep]
    return TileScores(boxes[keep], values, name="Abnormal-cell share per tile (ground truth)"), cx, cy, cls


def settle(app, window, timeout: float = 60.0) -> None:
    view = window.view
    end = time.time() + timeout
    while time.time() < end:
        app.processEvents()
        layers_done = all(getattr(layer, "is_complete", lambda: True)() for layer in view.layers())
        if view.is_complete() and view.source.is_idle() and layers_done:
            break
        time.sleep(0.01)
    view._settle()  # the smooth redraw without waiting for its timer
    for _ in range(5):
        app.processEvents()
        time.sleep(0.02)


def open_window(slide_path: Path, width: int, height: int):
    """(app, window): the viewer as ``cervixfm-viewer`` starts it (interpreter settings, theme), with private
    settings, showing ``slide_path``."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from cervixfm_app.viewer.main_window import MainWindow
    from cervixfm_app.viewer.style import apply_theme
    from cervixfm_app.viewer.workers import tune_interpreter_for_gui

    tune_interpreter_for_gui()
    app = QApplication.instance() or QApplication([])
    apply_theme(app)
    settings = QSettings(str(Path(tempfile.mkdtemp()) / "shots.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings)
    window.resize(width, height)
    window.show()
    if not window.open_path(slide_path):
        raise SystemExit(f"cannot open {slide_path}")
    return app, window


def save(image, path: Path) -> int:
    """PNG small enough for the README: a 256-colour palette (the slide has few distinct hues), then fewer
    colours or a smaller image until it fits ``MAX_BYTES``."""
    from PIL import Image

    from cervixfm_app.viewer.tile_source import qimage_to_rgb

    rgb = Image.fromarray(qimage_to_rgb(image))
    for colors, scale in ((256, 1.0), (192, 1.0), (128, 1.0), (128, 0.85), (96, 0.75)):
        img = rgb if scale == 1.0 else rgb.resize((int(rgb.width * scale), int(rgb.height * scale)),
                                                   Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buf, format="PNG", optimize=True)
        if buf.tell() <= MAX_BYTES:
            break
    path.write_bytes(buf.getvalue())
    return buf.tell()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=1000)
    args = ap.parse_args()
    slide_path = ensure_demo()

    from PySide6.QtCore import QPointF

    from cervixfm_app.viewer.demo import load_ground_truth
    from cervixfm_app.viewer.layers import HeatmapLayer, VectorLayer

    app, window = open_window(slide_path, args.width, args.height)
    objects = load_ground_truth(slide_path.with_suffix(".geojson"))
    scores, cx, cy, cls = abnormal_density(objects, window.view.source.size)
    heat = HeatmapLayer(scores, cmap="inferno", vmin=0.0, vmax=0.5, opacity=0.7, fade=True)
    cells = VectorLayer(objects, "Cells (ground truth)", line_width=1.8)
    window.view.add_layer(heat)
    window.view.add_layer(cells)
    args.out.mkdir(parents=True, exist_ok=True)
    view = window.view

    def shot(name: str, cursor: tuple[float, float] | None = None) -> None:
        settle(app, window)
        if cursor is not None:
            view.cursorMoved.emit(QPointF(*cursor), True)
        app.processEvents()
        size = save(window.grab().toImage(), args.out / name)
        print(f"{args.out / name}: {size / 1024:.0f} KB, {view.magnification():.1f}x, mode {cells.last_mode}")

    # 1. the whole smear with the abnormal-cell heat map
    view.zoom_to_fit()
    shot("viewer_slide.png", cursor=(view.source.size[0] * 0.55, view.source.size[1] * 0.45))

    # 2. 10x over the densest abnormal area, heat map dimmed, outlines on
    hsil = np.nonzero(cls == "HSIL")[0]
    grid = 1500
    key = (cx[hsil] // grid).astype(int) * 100000 + (cy[hsil] // grid).astype(int)
    best = np.bincount(key - key.min()).argmax() + key.min()
    bx, by = (best // 100000 + 0.5) * grid, (best % 100000 + 0.5) * grid
    heat.set_opacity(0.3)
    view.center_on(bx, by)
    view.set_magnification(10)
    shot("viewer_region_10x.png", cursor=(bx + 40, by - 25))

    # 3. 40x on one HSIL cell among its neighbours
    near = hsil[np.argmin((cx[hsil] - bx) ** 2 + (cy[hsil] - by) ** 2)]
    heat.set_visible(False)
    view.center_on(cx[near], cy[near])
    view.set_magnification(40)
    shot("viewer_cells_40x.png", cursor=(cx[near] + 12, cy[near] - 8))
    window.close()


if __name__ == "__main__":
    main()
