"""Crash-safe progress of one analysis: finished batches as small atomic part files.

HDF5 files are not crash-consistent (a ``kill -9`` during a write can corrupt the whole file), so progress is kept
as one ``.npz`` per finished batch, each written atomically. Resuming reads the parts and skips their tiles; the
final feature file is assembled from the parts in tile order, so it is identical whatever order tiles were computed
in (priority requests, interruptions) and identical to an uninterrupted run's.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import CervixFMError
from ..io import atomic_write, atomic_write_text

ARRAYS = ("tile_index", "coords", "features")


class Journal:
    def __init__(self, folder: str | Path, fingerprint: Mapping[str, Any]):
        """``fingerprint`` identifies the run (model hash, tiling parameters); parts of another run are discarded."""
        self.folder = Path(folder)
        self.fingerprint = dict(fingerprint)
        self._lock = threading.Lock()
        self._next_part = 0
        self._open()

    def _open(self) -> None:
        meta = self.folder / "run.json"
        if self.folder.exists():
            try:
                same = json.loads(meta.read_text()) == json.loads(json.dumps(self.fingerprint))
            except (OSError, ValueError):
                same = False
            if not same:  # parts of another model or tiling cannot be reused
                shutil.rmtree(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CervixFMError(f"Cannot create {self.folder}: {exc.strerror}. Choose a writable output folder.") from exc
        if not meta.exists():
            atomic_write_text(meta, json.dumps(self.fingerprint, indent=1, sort_keys=True))
        for stray in self.folder.glob(".*.tmp"):  # a temp file from a killed write
            stray.unlink(missing_ok=True)
        numbers = [int(p.stem.split("-")[1]) for p in self.folder.glob("part-*.npz")]
        self._next_part = max(numbers, default=-1) + 1

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.npz"))

    def iter_parts(self) -> Iterator[dict[str, np.ndarray]]:
        for path in self.parts():
            with np.load(path) as data:
                yield {k: data[k] for k in data.files}

    def done_tiles(self) -> set[int]:
        done: set[int] = set()
        for path in self.parts():
            with np.load(path) as data:
                done.update(int(i) for i in data["tile_index"])
        return done

    def skipped(self) -> dict[int, str]:
        path = self.folder / "skipped.json"
        if not path.exists():
            return {}
        return {int(k): v for k, v in json.loads(path.read_text()).items()}

    def record_skipped(self, skipped: Mapping[int, str]) -> None:
        with self._lock:
            merged = {**self.skipped(), **skipped}
            atomic_write_text(self.folder / "skipped.json", json.dumps({str(k): v for k, v in sorted(merged.items())}))

    def append(self, tile_index: np.ndarray, coords: np.ndarray, features: np.ndarray, **extra: np.ndarray) -> None:
        """Persist one finished batch; after this returns, a crash does not lose it."""
        with self._lock:
            path = self.folder / f"part-{self._next_part:07d}.npz"
            self._next_part += 1
        with atomic_write(path, "wb") as handle:
            np.savez(handle, tile_index=np.asarray(tile_index, np.int64), coords=np.asarray(coords, np.int64),
                     features=np.asarray(features, np.float32), **extra)

    def collect(self) -> dict[str, np.ndarray]:
        """All finished rows, sorted by tile index (duplicates from a crash between write and bookkeeping dropped)."""
        parts = list(self.iter_parts())
        if not parts:
            return {}
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        _, first = np.unique(merged["tile_index"], return_index=True)
        return {k: v[first] for k, v in merged.items()}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
