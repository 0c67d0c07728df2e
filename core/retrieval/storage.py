"""The on-disk layout of a cell index folder, written so that a crash never leaves a half-updated index.

::

    INDEX/manifest.json             format, version, size, backbone, segments, approximate index; the commit point
    INDEX/seg-000001.vectors.npy    raw embeddings of one add() (float32 or float16), memory-mapped when read
    INDEX/seg-000001.rows.npz       their ids and metadata (pickle-free)
    INDEX/ann-000004.faiss          approximate index (faiss.serialize_index), only above the exact-search limit

Data files are never modified in place: a save writes new files under new names, then atomically replaces
``manifest.json`` (the only file that names them), then deletes the files the new manifest no longer names. A crash
at any point leaves the previous manifest and all its files intact; leftovers are removed by the next save. The
manifest records every file's size and SHA-256: damaged or swapped files are named in the error instead of
crashing faiss or returning wrong neighbours.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import InputError
from ..io import atomic_write, atomic_write_text

FORMAT = "cervixfm-cell-index"
VERSION = 1
MANIFEST = "manifest.json"
#: Files up to this size are hashed on every open; bigger vector files only have their size and header checked
#: (hashing 4 GB costs seconds) and are fully checked by ``verify``.
HASH_ON_OPEN_BYTES = 256 * 2**20
_OWN_FILE = re.compile(r"^(seg-\d+\.(vectors\.npy|rows\.npz)|ann-\d+\.faiss)$")
_TEMP_FILE = re.compile(r"^\.(seg-\d+\.|ann-\d+\.|manifest\.json\.).*\.tmp$")


class _HashingWriter:
    """File-like wrapper that hashes what passes through, so big arrays are hashed while written, not re-read."""

    def __init__(self, handle):
        self.handle = handle
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.size += len(view)
        return self.handle.write(view)


def write_bytes(path: Path, data: bytes) -> dict[str, Any]:
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return {"file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_array(path: Path, array: np.ndarray) -> dict[str, Any]:
    with atomic_write(path, "wb") as handle:
        writer = _HashingWriter(handle)
        np.lib.format.write_array(writer, np.ascontiguousarray(array), allow_pickle=False)
    return {"file": path.name, "bytes": writer.size, "sha256": writer.sha.hexdigest()}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_bytes(path, buffer.getvalue())


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * 2**20), b""):
            sha.update(block)
    return sha.hexdigest()


def check_file(folder: Path, entry: dict[str, Any], full: bool) -> Path:
    """The path of a manifest entry after checking it exists, has the recorded size and (when cheap or ``full``)
    the recorded SHA-256."""
    path = folder / entry["file"]
    if not path.is_file():
        raise InputError(f"Index file {path} is missing (named in {folder / MANIFEST}). The index is incomplete: "
                         "restore the folder from a backup or rebuild it.")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise InputError(f"Index file {path} is damaged: {size:,} bytes instead of {entry['bytes']:,}. Rebuild the "
                         "index or restore it from a backup.")
    if (full or size <= HASH_ON_OPEN_BYTES) and file_sha256(path) != entry["sha256"]:
        raise InputError(f"Index file {path} is damaged: its contents do not match the checksum in {MANIFEST}. "
                         "Rebuild the index or restore it from a backup.")
    return path


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise InputError(f"Index {folder} does not exist.")
    if not path.is_file():
        raise InputError(f"{folder} is not a CervixFM cell index or atlas ({MANIFEST} missing). Build one with "
                         "`cervixfm index build` or `cervixfm atlas build`.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"Index manifest {path} is damaged ({exc}). Restore it from a backup or rebuild the index.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{path} is not a CervixFM cell index manifest (format {FORMAT!r} expected).")
    if manifest.get("version") != VERSION:
        raise InputError(f"{path} is index format version {manifest.get('version')}; this CervixFM reads version "
                         f"{VERSION}. Rebuild the index with this version.")
    try:
        dim, count = int(manifest["dim"]), int(manifest["count"])
        segments = manifest["segments"]
        total = sum(int(s["rows"]) for s in segments)
        if len(manifest["key_sum"]) != dim:
            raise ValueError("key_sum has the wrong length")
        float(manifest["key_sqsum"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"Index manifest {path} is damaged ({type(exc).__name__}: {exc}). Rebuild the index.") from exc
    if total != count or dim < 1:
        raise InputError(f"Index manifest {path} is inconsistent ({count} entries announced, {total} in its "
                         "segments). Rebuild the index.")
    return manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1))


def load_vectors(folder: Path, entry: dict[str, Any], rows: int, dim: int, dtype: str, full: bool) -> np.ndarray:
    path = check_file(folder, entry, full)
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"Index file {path} is damaged ({exc}). Rebuild the index.") from exc
    if vectors.shape != (rows, dim) or vectors.dtype != np.dtype(dtype):
        raise InputError(f"Index file {path} holds {vectors.dtype} {vectors.shape} where the manifest announces "
                         f"{dtype} ({rows}, {dim}). Rebuild the index.")
    return vectors


def load_npz(folder: Path, entry: dict[str, Any], full: bool) -> dict[str, np.ndarray]:
    path = check_file(folder, entry, full)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # BadZipFile, ValueError, OSError
        raise InputError(f"Index file {path} is damaged ({type(exc).__name__}: {exc}). Rebuild the index.") from exc


def remove_unreferenced(folder: Path, manifest: dict[str, Any]) -> None:
    """Delete index data files the committed manifest does not name (replaced generations, crash leftovers)."""
    keep = {s["vectors"]["file"] for s in manifest["segments"]} | {s["rows_file"]["file"] for s in manifest["segments"]}
    if manifest.get("ann"):
        keep.add(manifest["ann"]["file"]["file"])
    for path in folder.iterdir():
        if _OWN_FILE.match(path.name) and path.name not in keep:
            with contextlib.suppress(OSError):
                path.unlink()
        elif _TEMP_FILE.match(path.name):  # atomic_write's temporary of a write a crash interrupted
            with contextlib.suppress(OSError):
                path.unlink()


def own_files(folder: Path) -> Iterator[Path]:
    for path in folder.iterdir():
        if path.name == MANIFEST or _OWN_FILE.match(path.name):
            yield path


def prepare_folder(folder: Path, overwrite: bool) -> None:
    """Make ``folder`` ready for a new index: refuse to clobber an existing one unless asked, or a folder of other
    files at all."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} exists and is not a folder; choose another index location.")
    if folder.is_dir():
        entries = [p for p in folder.iterdir()]
        if (folder / MANIFEST).exists():
            if not overwrite:
                raise InputError(f"{folder} already holds an index. Pass --overwrite to replace it, or add to it "
                                 "(`cervixfm index build --append`).")
            for path in list(own_files(folder)):
                path.unlink()
        elif entries:
            raise InputError(f"{folder} is not empty and holds no index; choose a new or empty folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"Cannot create index folder {folder}: {exc.strerror}.") from exc
