"""Atomic file writing: a crash or a full disk never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import CervixFMError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    The temporary file lives in the destination folder so the final ``os.replace`` is a same-filesystem rename,
    which is atomic on POSIX and Windows. On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CervixFMError(f"Output folder {folder} does not exist: create it or choose another output path.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except PermissionError as exc:
        raise CervixFMError(f"Cannot write to {folder}: permission denied. Choose a writable output folder.") from exc
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should be as shareable as any new file
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
            raise CervixFMError(f"Disk full while writing {path}; nothing was overwritten. Free space and retry.") from exc
        raise


def atomic_save_npy(path: str | os.PathLike, array) -> None:
    """Write a numpy array as ``.npy`` atomically."""
    import numpy as np

    with atomic_write(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Like ``atomic_write`` for libraries that open the file themselves (tifffile, h5py): yields a temporary path
    beside ``path``; on success it is fsynced and renamed over ``path``, on any exception it is removed.

    ``suffix`` lets a library that looks at the extension see the right one.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CervixFMError(f"Output folder {folder} does not exist: create it or choose another output path.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=folder)
    except PermissionError as exc:
        raise CervixFMError(f"Cannot write to {folder}: permission denied. Choose a writable output folder.") from exc
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a slide or feature file should be shareable
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
            raise CervixFMError(
                f"Disk full while writing {path}; nothing was overwritten. Free space and retry.") from exc
        raise


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, briefly, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def json_default(value):
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays and paths, as results and cell files
    store them."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
