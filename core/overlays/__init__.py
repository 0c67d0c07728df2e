"""What overlay layers show, as plain data a screen-less test can check: object sets and per-tile scores.

The viewer's layers are views of these models (as napari's layers are views of their data): detections, cells,
segmentation contours or annotations go into an ``ObjectSet`` (geometries in level-0 pixels, a class each, a
spatial index for "what is in this rectangle" and "what is under this point"), per-tile scores or attention go into
a ``TileScores``. Both notify subscribers when they change, so an analysis running in a worker can feed them while
the viewer repaints. ``raster`` draws many objects into an RGBA array for zoomed-out views without any GUI library.
"""

from .objects import ObjectSet, ObjectSnapshot, ObjectsChanged
from .raster import draw_squares, render_objects
from .scores import TileScores, colorize, colormap_lut

__all__ = [
    "ObjectSet",
    "ObjectSnapshot",
    "ObjectsChanged",
    "TileScores",
    "colorize",
    "colormap_lut",
    "draw_squares",
    "render_objects",
]
