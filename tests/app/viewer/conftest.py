"""Viewer tests run offscreen on small synthetic slides; dialogs are captured instead of shown."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from slide_fixtures import synthetic  # noqa: E402


@pytest.fixture(scope="session")
def view_slide(tmp_path_factory):
    """3000 x 2200 px generic TIFF at 0.25 µm/px (4 pyramid levels), plenty of cells."""
    return synthetic(tmp_path_factory.mktemp("viewer_slides"), "view.tiff", width=3000, height=2200, seed=5,
                     cellularity=0.6, density=2.0, abnormal_fraction=0.3)


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def dialogs(monkeypatch):
    """Every QMessageBox the code opens, recorded as (kind, title, text) instead of blocking the test."""
    from PySide6.QtWidgets import QMessageBox

    shown = []
    for kind in ("critical", "warning", "information", "about"):
        monkeypatch.setattr(QMessageBox, kind, staticmethod(
            lambda parent, title, text, *a, _k=kind, **kw: shown.append((_k, title, text)) or
            QMessageBox.StandardButton.Ok))
    return shown


@pytest.fixture
def source_factory(qapp):
    """Tile sources for a slide path, closed after the test."""
    from cervixfm_app.viewer.tile_source import TileSource
    from core.slides import open_slide

    made = []

    def make(path, **kwargs):
        source = TileSource(open_slide(path), **kwargs)
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory):
    """1536 x 1024 px synthetic smear at 0.25 µm/px with its ground-truth GeoJSON (annotation and export tests)."""
    return synthetic(tmp_path_factory.mktemp("small_slides"), "small.tiff", width=1536, height=1024, seed=7,
                     cellularity=0.6, density=2.0, abnormal_fraction=0.4)

