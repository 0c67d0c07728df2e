"""One ``.safetensors`` file per head: the weights plus, in the file's string metadata, what rebuilds and labels them.

Metadata keys: ``format`` ("cervixfm-head"), ``format_version``, ``kind`` (a name in ``HEAD_KINDS``), ``config``
(JSON constructor arguments), ``classes`` (JSON list of class names, in output order), ``colors`` (JSON list of
[r, g, b] per class, or null) and ``info`` (JSON provenance, e.g. the backbone the head was trained on). Safetensors
holds no code, so a head from someone else is safe to open; the file is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from torch import nn

from ...errors import CheckpointError
from ...io import atomic_write
from .abmil import ABMIL
from .linear import LinearHead

FORMAT = "cervixfm-head"
FORMAT_VERSION = 1
HEAD_KINDS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "linear": LinearHead.from_config,
    "abmil": ABMIL.from_config,
}


@dataclasses.dataclass
class HeadFile:
    kind: str
    module: nn.Module
    config: dict[str, Any]
    classes: list[str]
    colors: list[list[int]] | None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _check_classes(classes: Sequence[str], colors: Sequence | None, num_classes: int | None) -> list[str]:
    names = [str(c) for c in classes]
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a head with {num_classes} outputs")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique: {names}")
    if colors is not None:
        if len(colors) != len(names):
            raise ValueError(f"{len(colors)} colours for {len(names)} classes")
        for c in colors:
            if len(c) != 3 or not all(isinstance(v, (int, float)) and 0 <= v <= 255 for v in c):
                raise ValueError(f"a class colour must be [r, g, b] in 0..255, got {c!r}")
    return names


def save_head(path: str | os.PathLike, kind: str, module: nn.Module, config: Mapping[str, Any],
              classes: Sequence[str], colors: Sequence[Sequence[int]] | None = None,
              info: Mapping[str, Any] | None = None) -> Path:
    """Write ``module``'s weights and its description to ``path`` (``.safetensors``) atomically."""
    from safetensors.torch import save

    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head kind {kind!r}; known: {', '.join(HEAD_KINDS)}")
    names = _check_classes(classes, colors, config.get("num_classes"))
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": kind,
        "config": json.dumps(dict(config)),
        "classes": json.dumps(names),
        "colors": json.dumps([[int(v) for v in c] for c in colors] if colors is not None else None),
        "info": json.dumps(dict(info or {}), default=str),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    data = save(tensors, metadata=metadata)
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return path


def load_head(path: str | os.PathLike, device: str = "cpu") -> HeadFile:
    """Rebuild a head saved by ``save_head``, in eval mode, with a clear error for anything else."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Head file {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:  # SafetensorError, OSError: not safetensors, truncated
        raise CheckpointError(
            f"{path} is not a readable head file (expected a .safetensors file written by CervixFM; it may be "
            f"truncated or another format): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a CervixFM head (no '{FORMAT}' metadata); "
                              "backbone weights go to --checkpoint, heads are written by training commands.")
    try:
        version = int(metadata.get("format_version", "0"))
    except ValueError:
        version = -1
    if version < 1 or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} is head format version {metadata.get('format_version')!r}; this CervixFM "
                              f"reads version {FORMAT_VERSION}. Update CervixFM or re-export the head.")
    kind = metadata.get("kind")
    if kind not in HEAD_KINDS:
        raise CheckpointError(f"{path} holds a head of kind {kind!r}, which this CervixFM does not know "
                              f"(known: {', '.join(HEAD_KINDS)}).")
    try:
        config = json.loads(metadata["config"])
        classes = json.loads(metadata["classes"])
        colors = json.loads(metadata.get("colors", "null"))
        info = json.loads(metadata.get("info", "{}"))
        if not isinstance(config, dict) or not isinstance(classes, list):
            raise ValueError("config must be an object and classes a list")
        classes = _check_classes(classes, colors, config.get("num_classes"))
        module = HEAD_KINDS[kind](config)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: the head description is damaged ({exc}); re-export the head.") from exc
    expected = module.state_dict()
    problems = [k for k in expected if k not in tensors or tuple(tensors[k].shape) != tuple(expected[k].shape)]
    problems += [k for k in tensors if k not in expected]
    if problems:
        raise CheckpointError(f"{path}: weights do not match its {kind} configuration {config} "
                              f"(keys {', '.join(problems[:6])}); the file is damaged.")
    module.load_state_dict(tensors, strict=True)
    return HeadFile(kind, module.to(device).eval(), config, classes, colors, info, path)
