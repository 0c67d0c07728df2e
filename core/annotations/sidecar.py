"""Autosave of a slide's annotations to a sidecar file, so a crash or a closed laptop loses at most seconds of work.

Where: beside the slide as ``<slide file name>.cervixfm.geojson`` (it travels with the slide and QuPath can import
it), or, when the slide's folder is read-only (a scanner share, a CD, a colleague's drive), in
``core.paths.data_dir()/annotations/<fingerprint>.geojson``. The fingerprint hashes the slide's size, name and
first and last 64 KiB, so it is instant for a 3 GB file, survives the slide being moved and still tells two slides
apart. An existing sidecar is always found again, wherever it was put.

The file is QuPath GeoJSON with the slide's bounds offset applied (drag it into QuPath and it lands in place); the
offset used is recorded in the file, so reading it back never depends on guessing it again. Writes are atomic.
A damaged sidecar (a disk fault, a hand edit) is kept as ``.bak`` and the session starts empty with a warning, so
the viewer still opens the slide.

Debouncing is the caller's job: the viewer's timer calls ``AutoSaver.save_if_dirty()`` a few seconds after the
last edit, preferably on a worker thread (``snapshot()`` makes that safe).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from ..errors import CervixFMError, InputError
from ..paths import data_dir
from .geojson import GeoJSONReport, bounds_offset, read_geojson, write_geojson

SIDECAR_SUFFIX = ".cervixfm.geojson"
FORMAT_VERSION = 1
_PROBE = 64 * 1024


def slide_fingerprint(slide_path: str | os.PathLike) -> str:
    """A short hash of the slide's name, size and first and last 64 KiB (fast for any file size)."""
    p = Path(slide_path)
    h = hashlib.sha256()
    size = p.stat().st_size
    h.update(f"{p.name}\0{size}\0".encode("utf-8"))
    with open(p, "rb") as fh:
        h.update(fh.read(_PROBE))
        if size > _PROBE:
            fh.seek(max(_PROBE, size - _PROBE))
            h.update(fh.read(_PROBE))
    return h.hexdigest()[:24]


def beside_path(slide_path: str | os.PathLike) -> Path:
    p = Path(slide_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def fallback_path(slide_path: str | os.PathLike) -> Path:
    return data_dir() / "annotations" / f"{slide_fingerprint(slide_path)}.geojson"


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def sidecar_path(slide_path: str | os.PathLike) -> Path:
    """Where this slide's annotations are (or will be) kept: an existing sidecar wins, else beside the slide
    when its folder is writable, else the per-user data folder."""
    beside = beside_path(slide_path)
    if beside.is_file():
        return beside
    fallback = fallback_path(slide_path)
    if fallback.is_file():
        return fallback
    return beside if _writable(beside.parent) else fallback


class Sidecar:
    """The sidecar of one slide: ``load()`` at open, ``save(annotations)`` on autosave."""

    def __init__(self, slide_path: str | os.PathLike, offset=None, path: str | os.PathLike | None = None) -> None:
        """``offset``: the opened ``Slide`` or its bounds offset (QuPath coordinates); ``path`` overrides where."""
        self.slide_path = Path(slide_path)
        self.offset = bounds_offset(offset)
        self.path = Path(path) if path is not None else sidecar_path(self.slide_path)

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> GeoJSONReport:
        """The saved annotations (empty when there is no sidecar yet). Never raises for a damaged file: it is
        renamed to ``.bak`` and the report says so."""
        if not self.path.is_file():
            return GeoJSONReport(path=self.path)
        offset = self._recorded_offset()
        try:
            return read_geojson(self.path, offset if offset is not None else self.offset)
        except InputError as exc:
            report = GeoJSONReport(path=self.path)
            backup = _backup_name(self.path)
            try:
                os.replace(self.path, backup)
                kept = f"it was kept as {backup}"
            except OSError:  # a read-only folder: leave the file alone and save elsewhere from now on
                kept = f"it was left untouched at {self.path}"
                self.path = fallback_path(self.slide_path)
            report.warn(f"the annotation sidecar was damaged ({exc}); {kept} and this slide's annotations start "
                        "empty")
            return report.finish()

    def save(self, annotations) -> GeoJSONReport:
        """Write all ``annotations`` atomically. If the chosen folder turns out not to be writable, switch to the
        per-user data folder and write there (``self.path`` then says where)."""
        try:
            return self._write(annotations)
        except CervixFMError:
            fallback = fallback_path(self.slide_path)
            if self.path == fallback or _writable(self.path.parent):
                raise
            self.path = fallback
            return self._write(annotations)

    def _write(self, annotations) -> GeoJSONReport:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        extra = {"cervixfm": {"format": "cervixfm-annotations", "version": FORMAT_VERSION,
                              "slide": self.slide_path.name, "slide_path": str(self.slide_path),
                              "bounds_offset": list(self.offset), "saved": time.time()}}
        return write_geojson(self.path, annotations, self.offset, extra=extra)

    def _recorded_offset(self) -> tuple[float, float] | None:
        """The bounds offset the file was written with, from its first line (where ``_write`` puts it)."""
        import json

        key = '"cervixfm": '
        try:
            with open(self.path, encoding="utf-8") as fh:
                head = fh.readline(1 << 16)
            i = head.find(key)
            if i < 0:
                return None
            meta, _ = json.JSONDecoder().raw_decode(head, i + len(key))
            x, y = meta["bounds_offset"]
            return float(x), float(y)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            return None


def _backup_name(path: Path) -> Path:
    backup = path.with_name(path.name + ".bak")
    if backup.exists():
        backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
    return backup


class AutoSaver:
    """Saves a store to its sidecar when it changed since the last save.

    ``dirty`` compares the store's revision with the one last saved; ``save_if_dirty()`` takes a snapshot under
    the store's lock and writes it (call it from a timer, on any thread; concurrent calls are serialised).
    """

    def __init__(self, store, sidecar: Sidecar) -> None:
        self.store = store
        self.sidecar = sidecar
        self._saved_revision = store.revision
        self._lock = threading.Lock()
        self.last_report: GeoJSONReport | None = None

    @property
    def dirty(self) -> bool:
        return self.store.revision != self._saved_revision

    def mark_saved(self) -> None:
        """Treat the current content as saved (after loading the sidecar into the store)."""
        self._saved_revision = self.store.revision

    def save_if_dirty(self) -> bool:
        with self._lock:
            revision = self.store.revision  # read before the snapshot: an edit in between is saved next time
            if revision == self._saved_revision:
                return False
            snapshot = self.store.snapshot()
            self.last_report = self.sidecar.save(snapshot)
            self._saved_revision = revision
            return True
