"""Helpers for the viewer tests: pixels of a widget, synthetic input events."""

from __future__ import annotations

import numpy as np

from tests_support import random_backbone


def grab_rgb(widget) -> np.ndarray:
    """What the widget paints now, as (h, w, 3) uint8 RGB."""
    from cervixfm_app.viewer.tile_source import qimage_to_rgb

    return qimage_to_rgb(widget.grab().toImage())


def send_mouse(widget, kind: str, x: float, y: float, button=None, buttons=None) -> None:
    """Deliver a mouse press/move/release/double-click at widget position (x, y)."""
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    types = {"press": QEvent.Type.MouseButtonPress, "move": QEvent.Type.MouseMove,
             "release": QEvent.Type.MouseButtonRelease, "double": QEvent.Type.MouseButtonDblClick}
    button = Qt.MouseButton.LeftButton if button is None else button
    if buttons is None:
        buttons = Qt.MouseButton.NoButton if kind == "release" else button
    if kind == "move" and buttons == Qt.MouseButton.LeftButton and button == Qt.MouseButton.LeftButton:
        button = Qt.MouseButton.NoButton
    pos = QPointF(x, y)
    event = QMouseEvent(types[kind], pos, widget.mapToGlobal(pos), button, buttons, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


def send_wheel(widget, x: float, y: float, angle: int) -> None:
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    pos = QPointF(x, y)
    event = QWheelEvent(pos, widget.mapToGlobal(pos), QPoint(0, 0), QPoint(0, angle), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def shown_window(qtbot, settings, size=(900, 600)):
    """A main window with private settings, shown offscreen (the caller closes it)."""
    from cervixfm_app.viewer.main_window import MainWindow

    w = MainWindow(settings=settings)
    w.resize(*size)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    return w


def open_private_copy(qtbot, settings, slide_path, folder, size=(900, 600)):
    """A shown main window with a private copy of the slide open, so its annotation sidecar is private too."""
    import shutil

    slide = folder / "case.tiff"
    shutil.copy(slide_path, slide)
    w = shown_window(qtbot, settings, size)
    assert w.open_path(slide)
    return w


def slow_bundle_model(seconds_per_batch: float, folder):
    """A bundle's real model as if on a slower device (each batch takes at least this long), so a test can act
    while an analysis is still going on a tiny slide. A module-level function: the analysis process unpickles it
    by name (``AnalysisPanel.model_loader = functools.partial(slow_bundle_model, seconds)``)."""
    import time

    from core.pipeline.analysis_model import model_from_bundle

    model = model_from_bundle(folder)
    encode = model.encode

    def slow(images):
        time.sleep(seconds_per_batch)
        return encode(images)

    model.encode = slow
    return model


def tiny_bundle(folder, tile_classes, cell_classes):
    """A real model bundle in ``folder``: vit-test16 with random weights (unit layer scales, so features depend on
    the image) and three random heads saved as real head files: a tile classifier, a cell classifier (the first
    class of each is the normal one) and an ABMIL slide head."""
    import torch

    from core.models.bundle import BundleSpec, HeadSpec, write_bundle_manifest
    from core.models.heads import ABMIL, LinearHead, save_head

    (folder / "heads").mkdir()
    random_backbone(folder / "backbone.pth")
    tiles = LinearHead(64, len(tile_classes))
    cells = LinearHead(64, len(cell_classes))
    for head in (tiles, cells):
        torch.nn.init.normal_(head.classifier.weight, std=0.5)
    slide = ABMIL(64, 2, hidden_dim=32, attn_dim=16)
    palette = [[90, 160, 240], [240, 170, 40], [230, 50, 50], [90, 160, 90], [220, 60, 60]]
    files = {
        "tiles": save_head(folder / "heads" / "tiles.safetensors", "linear", tiles, tiles.config(), tile_classes,
                           [[90, 160, 90], [220, 60, 60]][:len(tile_classes)],
                           {"normal_classes": [tile_classes[0]]}),
        "cells": save_head(folder / "heads" / "cells.safetensors", "linear", cells, cells.config(), cell_classes,
                           palette[:len(cell_classes)], {"normal_classes": [cell_classes[0]]}),
        "slide": save_head(folder / "heads" / "slide.safetensors", "abmil", slide, slide.config(), tile_classes),
    }
    roles = {"tiles": "tile-classifier", "cells": "cell-classifier", "slide": "slide"}
    spec = BundleSpec(folder, "Tiny test bundle", folder / "backbone.pth", None, None, None, 224, 0.5,
                      (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                      tuple(HeadSpec(name, roles[name], file) for name, file in files.items()))
    write_bundle_manifest(spec)
    return folder
