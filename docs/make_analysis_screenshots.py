"""Screenshots of the viewer doing its job: an analysis with live overlays, the suspicious-cell gallery with review
decisions, and a similar-cell search. Everything on screen is computed by the application itself, through the same
menus and panels a user clicks, on the demo slide with the installed demo bundle.

The demo bundle is a small model trained here on synthetic smears (``cervixfm demo-bundle``); the pictures show
what the viewer does, not diagnostic performance. Run ``.venv/bin/cervixfm demo-bundle`` first if it is missing.

Usage: python docs/make_analysis_screenshots.py [--out docs/images] [--width 1600 --height 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from make_screenshots import ensure_demo, open_window, save, settle  # noqa: E402


def wait(app, condition, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            raise SystemExit(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the analysis")
    args = ap.parse_args()
    slide_path = ensure_demo()

    from PySide6.QtCore import QPointF

    from cervixfm_app.viewer.demo import demo_bundle_path

    if demo_bundle_path() is None:
        raise SystemExit("no demo bundle installed: run `.venv/bin/cervixfm demo-bundle` first")
    app, window = open_window(slide_path, args.width, args.height)
    view, panel = window.view, window.analysis
    args.out.mkdir(parents=True, exist_ok=True)
    settle(app, window)

    def shot(name: str) -> None:
        settle(app, window)
        size = save(window.grab().toImage(), args.out / name)
        print(f"{args.out / name}: {size / 1024:.0f} KB, {view.magnification():.1f}x", flush=True)

    # 1. Analyse View with cells, on a 5x field of the smear: the heat map and cells arrive while it runs.
    w, h = view.source.size
    view.center_on(w * 0.42, h * 0.40)
    view.set_magnification(5)
    settle(app, window)
    panel.find_cells_action.setChecked(True)
    started = time.time()
    panel.analyse_view_action.trigger()
    wait(app, lambda: panel.is_running(), 30, "the analysis to start")
    wait(app, lambda: not panel.is_running(), args.timeout, "the analysis")
    wait(app, lambda: window.session.cells is not None, 120, "the cells")
    print(f"analysis of the view: {time.time() - started:.0f} s, {len(window.session.cells):,} cells", flush=True)
    shot("viewer_analysis.png")

    # 2. The suspicious-cell gallery: the most abnormal cells, a few decisions recorded, the first one shown at 40x
    #    (the tile heat map off, as a pathologist reading cells at 40x would have it).
    for layer in view.layers():
        if layer.name.startswith("Tile"):
            layer.set_visible(False)
    gallery_panel = window.suspicious_cells
    wait(app, lambda: gallery_panel.current_ranking() is not None, 60, "the suspicious-cell ranking")
    gallery = gallery_panel.gallery
    gallery.setFocus()
    for row, decision in enumerate(["accepted", "accepted", "rejected"]):
        gallery.set_current_row(row)
        gallery_panel.decide(decision)
    gallery.set_current_row(0)
    gallery_panel.go_to(gallery.current_item())
    wait(app, lambda: all(gallery.loader.image(gallery.item(i).picture) is not None
                          for i in range(min(gallery.count(), 12))), 60, "the thumbnails")
    shot("viewer_suspicious_cells.png")

    # 3. Similar cells: the tool on the most abnormal cell; hits from this slide with their distances.
    similar = window.similar_cells
    similar.tool_action.setChecked(True)
    table = window.session.cells
    first = gallery.item(0)
    x, y = table.centres[int(first.data)]  # the item's data is its row in the cell table
    previous = similar.result
    similar.query_at(float(x), float(y))
    wait(app, lambda: similar.result is not None and similar.result is not previous, 300, "the similar-cell search")
    hits = similar.gallery
    wait(app, lambda: all(hits.loader.image(hits.item(i).picture) is not None
                          for i in range(min(hits.count(), 12))), 60, "the hit thumbnails")
    view.cursorMoved.emit(QPointF(float(x), float(y)), True)
    shot("viewer_similar_cells.png")
    for _ in range(3):  # take the demo decisions back: the user's demo slide keeps only their own
        window.session.store.undo()
    window.close()
    print(f"cells: {np.count_nonzero(np.isfinite(table.centres[:, 0])):,}")


if __name__ == "__main__":
    main()
