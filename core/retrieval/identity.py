"""Which backbone made an embedding, and the refusal to compare embeddings of two different backbones.

Distances between features of two backbones (or two feature modes of one) are meaningless yet look like any other
numbers, so an index records its backbone and refuses queries from another one. What decides compatibility: the
weights' SHA-256, the feature mode (``cls`` or ``cls+meanpatch``), the embedding size and, where recorded, the
input size the crops were fed at (the same weights give other features at 112 px than at 224); the name, checkpoint
path and preset are kept for messages and for finding the weights again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import CervixFMError

DECISIVE = ("sha256", "feature", "embed_dim", "input_size")


def backbone_identity(sha256: str | None, feature: str, embed_dim: int, name: str | None = None,
                      checkpoint: str | Path | None = None, preset: str | None = None,
                      input_size: int | None = None) -> dict[str, Any]:
    """``input_size`` None: not recorded (older indexes, slide analyses), compatible with any."""
    return {"sha256": sha256, "feature": feature, "embed_dim": int(embed_dim), "name": name,
            "checkpoint": str(checkpoint) if checkpoint else None, "preset": preset,
            "input_size": int(input_size) if input_size else None}


def feature_dim(loaded) -> int:
    d = loaded.config.embed_dim
    return 2 * d if loaded.feature == "cls+meanpatch" else d


def identity_of_backbone(loaded) -> dict[str, Any]:
    """Identity of a :class:`core.models.LoadedBackbone` (hashes the weights file once; the hash is cached)."""
    from ..models.checkpoint_io import cached_sha256

    sha = cached_sha256(loaded.path) if loaded.path else None
    return backbone_identity(sha, loaded.feature, feature_dim(loaded), loaded.name, loaded.path,
                             loaded.preset.name if loaded.preset else None, loaded.input_size)


def identity_of_model(model) -> dict[str, Any]:
    """Identity of a :class:`core.pipeline.analysis_model.AnalysisModel`."""
    b = model.backbone
    return backbone_identity(model.sha256, b.feature, model.embed_dim, model.name, b.path,
                             b.preset.name if b.preset else None, model.preprocessing.size)


def identity_of_result(result) -> dict[str, Any]:
    """Identity recorded in a slide analysis result (``result.json`` → ``model``)."""
    m = result.model or {}
    return backbone_identity(m.get("sha256"), m.get("feature", "cls"), int(m.get("embed_dim") or 0), m.get("name"),
                             m.get("checkpoint"), m.get("preset"))


def describe(identity: Mapping[str, Any] | None) -> str:
    if not identity:
        return "an unrecorded backbone"
    sha = identity.get("sha256") or "?"
    size = f" of {identity['input_size']}-px crops" if identity.get("input_size") else ""
    return (f"{identity.get('name') or 'a backbone'} ({identity.get('embed_dim')}-d {identity.get('feature')} "
            f"features{size}, weights sha256 {sha[:12]})")


def same_backbone(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """True when either side is unknown (raw vectors) or every decisive field both sides record agrees."""
    if not a or not b:
        return True
    return all(a.get(key) is None or b.get(key) is None or a.get(key) == b.get(key) for key in DECISIVE)


def check_same_backbone(index_identity: Mapping[str, Any] | None, other: Mapping[str, Any] | None,
                        index_name: str, what: str = "the query") -> None:
    if not same_backbone(index_identity, other):
        hint = f" ({index_identity['checkpoint']})" if index_identity and index_identity.get("checkpoint") else ""
        raise CervixFMError(
            f"{index_name} was built with {describe(index_identity)}, but {what} was embedded with {describe(other)}. "
            f"Embeddings of different backbones cannot be compared: use the checkpoint the index was built with"
            f"{hint}, or build a new index with this backbone."
        )
