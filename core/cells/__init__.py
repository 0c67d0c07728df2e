"""Cell-level analysis: find every cell and its nucleus, embed a crop centred on it, classify and rank it.

``CellAnalysis`` (``analyze_cells``) is the stage that follows a slide analysis; ``ClassicalCellDetector`` finds
cells with scikit-image alone and any ``CellDetector`` can replace it; ``CellTable`` / ``load_cells`` hold the
result; ``export`` writes QuPath GeoJSON and CSV; ``evaluate`` scores localisation against ground truth.
"""

from .analyze_cells import CellAnalysis, CellOptions, CellProgress, CellResult, analyze_cells
from .cell import Cell, CellDetector, TileFrame
from .classify import DEFAULT_NORMAL_CLASSES, CellClassifier, classifier_from_head_file, classifiers_of_model
from .localise import ClassicalCellDetector, LocaliseOptions
from .table import CELLS_FILE, CellFile, CellTable, load_cells, save_cells

__all__ = [
    "CELLS_FILE", "Cell", "CellAnalysis", "CellClassifier", "CellDetector", "CellFile", "CellOptions", "CellProgress",
    "CellResult", "CellTable", "ClassicalCellDetector", "DEFAULT_NORMAL_CLASSES", "LocaliseOptions", "TileFrame",
    "analyze_cells", "classifier_from_head_file", "classifiers_of_model", "load_cells", "save_cells",
]
