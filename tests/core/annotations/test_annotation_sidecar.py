"""Sidecar autosave: where it goes, round trip with the bounds offset, recovery from a damaged file."""

from __future__ import annotations

import json
import shutil

import pytest
from shapely.geometry import Point, box

from core.annotations import Annotation, AnnotationStore, AutoSaver, Sidecar, sidecar_path, slide_fingerprint
from core.annotations import sidecar as sidecar_mod


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CERVIXFM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def slide_file(tmp_path):
    path = tmp_path / "slides" / "case 1.svs"
    path.parent.mkdir()
    path.write_bytes(b"II*\x00" + bytes(range(256)) * 1000)
    return path


def test_save_and_load_beside_the_slide(slide_file, home):
    objs = [Annotation(box(100, 100, 200, 150), classification="HSIL", name="r"),
            Annotation(Point(5, 5), "annotation", source="review")]
    side = Sidecar(slide_file, offset=(30, 40))
    assert side.path == slide_file.with_name("case 1.svs.cervixfm.geojson") and not side.exists()
    assert side.load().annotations == []
    side.save(objs)
    data = json.loads(side.path.read_text(encoding="utf-8"))
    assert data["cervixfm"]["slide"] == "case 1.svs" and data["cervixfm"]["bounds_offset"] == [30, 40]
    ring = data["features"][0]["geometry"]["coordinates"][0]
    assert [70.0, 60.0] in ring and [170.0, 110.0] in ring  # QuPath's frame: the offset is subtracted
    # reading back uses the recorded offset even if the caller passes none
    assert Sidecar(slide_file).load().annotations == objs
    assert sidecar_path(slide_file) == side.path


def test_read_only_folder_falls_back_to_the_data_folder_and_is_found_again(slide_file, home, monkeypatch):
    monkeypatch.setattr(sidecar_mod, "_writable", lambda folder: folder != slide_file.parent)
    side = Sidecar(slide_file)
    assert side.path.parent == home / "annotations" and side.path.stem == slide_fingerprint(slide_file)
    side.save([Annotation(Point(1, 2))])
    assert side.path.is_file() and not slide_file.with_name(slide_file.name + ".cervixfm.geojson").exists()
    # the slide moved to another folder: same fingerprint, same sidecar
    moved = home.parent / "elsewhere" / slide_file.name
    moved.parent.mkdir()
    shutil.copy(slide_file, moved)
    assert sidecar_path(moved) == side.path and len(Sidecar(moved).load().annotations) == 1


def test_save_switches_to_fallback_when_the_chosen_folder_fails(slide_file, home, monkeypatch):
    side = Sidecar(slide_file)
    assert side.path.parent == slide_file.parent
    real_write = sidecar_mod.write_geojson

    def failing(path, *args, **kwargs):
        if path.parent == slide_file.parent:
            from core.errors import CervixFMError

            raise CervixFMError(f"Cannot write to {path.parent}: permission denied.")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(sidecar_mod, "write_geojson", failing)
    monkeypatch.setattr(sidecar_mod, "_writable", lambda folder: folder != slide_file.parent)
    side.save([Annotation(Point(1, 2))])
    assert side.path.parent == home / "annotations" and side.path.is_file()


def test_damaged_sidecar_is_kept_as_bak_and_loading_starts_empty(slide_file, home):
    side = Sidecar(slide_file)
    side.save([Annotation(Point(1, 2))])
    text = side.path.read_text(encoding="utf-8")
    side.path.write_text(text[: len(text) // 2], encoding="utf-8")  # a crash mid-copy, a disk fault
    report = side.load()
    assert report.annotations == [] and "damaged" in report.warnings[0]
    backup = side.path.with_name(side.path.name + ".bak")
    assert backup.read_text(encoding="utf-8") == text[: len(text) // 2] and not side.path.exists()
    side.path.write_text("{not json", encoding="utf-8")
    report = side.load()
    assert report.annotations == [] and backup.exists()
    assert len(list(side.path.parent.glob("*.bak"))) == 2  # the first backup is not overwritten


def test_autosaver_saves_only_when_the_store_changed(slide_file, home):
    store = AnnotationStore()
    saver = AutoSaver(store, Sidecar(slide_file))
    assert not saver.dirty and not saver.save_if_dirty()
    a = Annotation(box(0, 0, 10, 10))
    store.add(a)
    assert saver.dirty and saver.save_if_dirty() and not saver.dirty
    assert Sidecar(slide_file).load().annotations == [a]
    store.undo()
    assert saver.dirty and saver.save_if_dirty()
    assert Sidecar(slide_file).load().annotations == []
    store.load([a])
    saver.mark_saved()
    assert not saver.dirty
