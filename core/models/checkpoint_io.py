"""Reading and writing weight files safely.

Pickled checkpoints can execute code when unpickled, so ``.pth``/``.pt`` files are read with
``torch.load(weights_only=True)`` only; ``.safetensors`` files are read with safetensors. Writing is atomic.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError
from ..io import atomic_write

SAFETENSORS_SUFFIXES = {".safetensors"}


def read_weights_file(path: str | os.PathLike) -> Any:
    """The object stored in a checkpoint file (usually a possibly nested dict of tensors), on the CPU."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint file {path} does not exist. Check the path (see README: model weights).")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the checkpoint file inside it (e.g. CervixFM.pth).")
    if path.stat().st_size == 0:
        raise CheckpointError(f"Checkpoint file {path} is empty (0 bytes): the download or copy was interrupted.")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES or _looks_like_safetensors(path):
        return _read_safetensors(path)
    return _read_torch(path)


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ValueError
        raise CheckpointError(
            f"{path} is not a readable safetensors file (it may be truncated or corrupt): {_first_line(exc)}"
        ) from exc


def _read_torch(path: Path) -> Any:
    is_zip = zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():  # torch's note on a plain pickle's protocol: the errors below say what matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "weights_only" in text:
            raise CheckpointError(
                f"{path} contains Python objects beyond tensors, which could run code when loaded; CervixFM refuses "
                "to load it. If you trust its source, re-save just its state dict (torch.save(model.state_dict(), ...)) "
                "or convert it to .safetensors."
            ) from exc
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (unreadable pickle: {_first_line(exc)}).") from exc
    except Exception as exc:  # the unpickler raises many types (IndexError, KeyError, RuntimeError...) on garbage
        hint = "it looks truncated (incomplete download or copy)" if is_zip or isinstance(exc, EOFError) else \
            "it is not a PyTorch or safetensors checkpoint"
        raise CheckpointError(f"Cannot read checkpoint {path}: {hint}. Details: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def save_weights_file(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Save tensors as ``.safetensors`` (by suffix) or a ``torch.save`` file, atomically."""
    path = Path(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors.torch import save

        flat = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        data = save(flat)
        with atomic_write(path, "wb") as handle:
            handle.write(data)
    else:
        with atomic_write(path, "wb") as handle:
            torch.save(dict(state), handle)
    return path


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Content hash recorded as provenance, so results can say exactly which weights made them."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_sha256(path: str | os.PathLike) -> str:
    """``file_sha256`` remembered per (path, size, mtime): hashing a 1.2 GB checkpoint on every run costs seconds."""
    import json

    from ..io import atomic_write_text
    from ..paths import cache_dir

    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    store = cache_dir() / "sha256.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    digest = file_sha256(path)
    known[key] = digest
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(store, json.dumps(known))
    except Exception:  # a read-only home must not stop an analysis
        pass
    return digest
