"""Frozen-backbone features computed once per image and kept on disk, tagged with the backbone that made them.

A linear probe or a label-efficiency sweep trains many heads on the same features; recomputing a ViT-L forward pass
per run would dominate the cost. The cache is an ``.npz`` (no pickles) with the image names, the (N, D) float32
features and a JSON identity of the backbone: checkpoint SHA-256, architecture, preset, feature mode and
preprocessing. Reusing features of another backbone would silently corrupt every number downstream, so a mismatch
is refused unless the caller asks to overwrite. Images not yet in the cache are embedded and added.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import CervixFMError, InputError
from core.io import atomic_write

CACHE_FORMAT = "cervixfm-feature-cache/1"


def backbone_identity(loaded, preprocessing=None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What determines a backbone's features: weights hash, architecture, preset, feature mode, preprocessing."""
    from core.models.checkpoint_io import cached_sha256

    prep = preprocessing or loaded.preprocessing()
    identity = {
        "checkpoint_sha256": cached_sha256(loaded.path) if loaded.path else None,
        "config": loaded.config.to_dict(),
        "preset": loaded.preset.name if loaded.preset else None,
        "feature": loaded.feature,
        "preprocessing": {"size": prep.size, "mean": list(prep.mean), "std": list(prep.std)},
    }
    identity.update(extra or {})
    return json.loads(json.dumps(identity))  # tuples -> lists, so a round trip through the file compares equal


def _describe(identity: dict[str, Any]) -> str:
    sha = identity.get("checkpoint_sha256") or "?"
    cfg = identity.get("config") or {}
    return (f"{identity.get('preset') or 'custom ViT'} {cfg.get('embed_dim', '?')}-d, weights sha256 {sha[:12]}, "
            f"{identity.get('feature')} features")


def read_cache(path: Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["format"]) != CACHE_FORMAT:
                raise ValueError(f"format {data['format']}")
            names = [str(n) for n in data["names"]]
            features = np.asarray(data["features"], dtype=np.float32)
            identity = json.loads(str(data["identity"]))
    except Exception as exc:  # BadZipFile, KeyError, ValueError, OSError
        raise InputError(f"Feature cache {path} is damaged or not a CervixFM feature cache ({exc}). Delete it or "
                         "pass --overwrite-cache.") from exc
    if features.ndim != 2 or len(features) != len(names):
        raise InputError(f"Feature cache {path} is inconsistent ({len(names)} names, features {features.shape}). "
                         "Delete it or pass --overwrite-cache.")
    return names, features, identity


def write_cache(path: Path, names: Sequence[str], features: np.ndarray, identity: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, format=np.asarray(CACHE_FORMAT), names=np.asarray(list(names), dtype=str),
             features=np.asarray(features, dtype=np.float32), identity=np.asarray(json.dumps(identity)))
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def cached_features(
    path: str | os.PathLike,
    identity: dict[str, Any],
    names: Sequence[str],
    paths: Sequence[Path],
    embed: Callable[[Sequence[Path]], np.ndarray],
    overwrite: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
) -> np.ndarray:
    """Features of ``names`` (in that order), from the cache at ``path`` where present, embedding the rest."""
    path = Path(path)
    known: dict[str, int] = {}
    cached_names: list[str] = []
    cached = np.zeros((0, 0), np.float32)
    if path.exists() and not overwrite:
        cached_names, cached, cached_identity = read_cache(path)
        if cached_identity != identity:
            raise CervixFMError(
                f"Feature cache {path} was computed with a different backbone ({_describe(cached_identity)}; now "
                f"{_describe(identity)}). Pass --overwrite-cache to recompute it, or choose another --feature_path."
            )
        known = {n: i for i, n in enumerate(cached_names)}
    missing = [i for i, n in enumerate(names) if n not in known]
    if missing:
        log(f"embedding {len(missing)} image(s) not in {path.name} ({len(names) - len(missing)} cached)")
        fresh = np.asarray(embed([paths[i] for i in missing]), dtype=np.float32)
        if fresh.shape[0] != len(missing):
            raise RuntimeError(f"embedding returned {fresh.shape[0]} rows for {len(missing)} images")
        if len(cached_names) and cached.shape[1] != fresh.shape[1]:
            raise CervixFMError(f"Feature cache {path} holds {cached.shape[1]}-d features but the backbone gives "
                                f"{fresh.shape[1]}-d. Pass --overwrite-cache.")
        all_names = list(cached_names) + [names[i] for i in missing]
        all_features = np.concatenate([cached.reshape(-1, fresh.shape[1]), fresh]) if len(cached_names) else fresh
        path.parent.mkdir(parents=True, exist_ok=True)
        write_cache(path, all_names, all_features, identity)
        known = {n: i for i, n in enumerate(all_names)}
        cached = all_features
    else:
        log(f"all {len(names)} feature(s) read from {path}")
    return cached[[known[n] for n in names]] if len(names) else np.zeros((0, cached.shape[1]), np.float32)
