"""Model bundle: everything an analysis needs, in one folder, validated before any slide is touched.

``bundle.json`` names the backbone checkpoint (relative to the folder) and its architecture (preset or config),
the preprocessing (mean/std, tile size, target MPP) and zero or more heads. A bundle without heads is valid: it gives
features and similar-cell search. Example::

    {"format": "cervixfm-bundle", "version": 1, "name": "CervixFM ViT-L/16",
     "backbone": {"checkpoint": "CervixFM.pth", "preset": "cervixfm-vitl16", "sha256": "…optional…"},
     "preprocessing": {"tile_size": 224, "target_mpp": 0.5, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
     "heads": [{"name": "tiles", "role": "tile-classifier", "file": "heads/tiles.safetensors"}]}

Head roles: ``tile-classifier`` (a class per tile: heat map), ``cell-classifier`` (a class per cell), ``slide``
(ABMIL over tile features: slide score and attention).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..errors import CervixFMError
from ..io import atomic_write_text
from .presets import IMAGENET_MEAN, IMAGENET_STD

FORMAT = "cervixfm-bundle"
MANIFEST = "bundle.json"
HEAD_ROLES = ("tile-classifier", "cell-classifier", "slide")
DEFAULT_TARGET_MPP = 0.5  # µm/px for slide tiles: 224 px ≈ 112 µm, two or three squamous cells per tile


class BundleError(CervixFMError):
    """The bundle folder or its manifest is incomplete or inconsistent."""


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    name: str
    role: str
    file: Path


@dataclasses.dataclass(frozen=True)
class BundleSpec:
    folder: Path
    name: str
    checkpoint: Path
    preset: str | None
    config: Any  # mapping or path to YAML/JSON, or None
    sha256: str | None
    tile_size: int
    target_mpp: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    heads: tuple[HeadSpec, ...]

    def to_manifest(self) -> dict[str, Any]:
        backbone: dict[str, Any] = {"checkpoint": _rel(self.checkpoint, self.folder)}
        if self.preset:
            backbone["preset"] = self.preset
        if self.config is not None:
            backbone["config"] = self.config if isinstance(self.config, dict) else _rel(Path(self.config), self.folder)
        if self.sha256:
            backbone["sha256"] = self.sha256
        return {
            "format": FORMAT, "version": 1, "name": self.name, "backbone": backbone,
            "preprocessing": {"tile_size": self.tile_size, "target_mpp": self.target_mpp,
                              "mean": list(self.mean), "std": list(self.std)},
            "heads": [{"name": h.name, "role": h.role, "file": _rel(h.file, self.folder)} for h in self.heads],
        }


def _rel(path: Path, folder: Path) -> str:
    try:
        return Path(path).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def read_bundle_spec(folder: str | os.PathLike) -> BundleSpec:
    """Parse and check ``bundle.json`` (files exist, values sane) without loading any weights."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not folder.is_dir():
        raise BundleError(f"Bundle folder {folder} does not exist.")
    if not manifest.is_file():
        raise BundleError(f"{folder} is not a model bundle: it has no {MANIFEST}. Create one with `cervixfm bundle init`.")
    try:
        data = json.loads(manifest.read_text())
    except ValueError as exc:
        raise BundleError(f"{manifest} is not valid JSON: {exc}") from exc
    problems: list[str] = []
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{manifest} is not a CervixFM bundle manifest (missing \"format\": \"{FORMAT}\").")
    backbone = data.get("backbone") or {}
    ckpt_name = backbone.get("checkpoint")
    checkpoint = (folder / ckpt_name) if ckpt_name else None
    if not ckpt_name:
        problems.append("backbone.checkpoint is not set")
    elif not checkpoint.is_file():
        problems.append(f"backbone checkpoint {checkpoint} does not exist (copy the weights there or fix the path)")
    config = backbone.get("config")
    if isinstance(config, str):
        config = folder / config
        if not config.is_file():
            problems.append(f"backbone config {config} does not exist")
    prep = data.get("preprocessing") or {}
    tile_size = prep.get("tile_size", 224)
    target_mpp = prep.get("target_mpp", DEFAULT_TARGET_MPP)
    mean = tuple(prep.get("mean", IMAGENET_MEAN))
    std = tuple(prep.get("std", IMAGENET_STD))
    if not isinstance(tile_size, int) or tile_size < 16:
        problems.append(f"preprocessing.tile_size must be an integer >= 16, not {tile_size!r}")
    if not isinstance(target_mpp, (int, float)) or not 0.01 < target_mpp < 100:
        problems.append(f"preprocessing.target_mpp must be in µm/px (e.g. 0.5), not {target_mpp!r}")
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        problems.append("preprocessing.mean and std must be three numbers each (std > 0)")
    heads = []
    for k, head in enumerate(data.get("heads") or []):
        name = head.get("name") or f"head{k}"
        role = head.get("role")
        file = folder / head.get("file", "")
        if role not in HEAD_ROLES:
            problems.append(f"head {name!r}: role must be one of {', '.join(HEAD_ROLES)}, not {role!r}")
        if not head.get("file") or not file.is_file():
            problems.append(f"head {name!r}: weights file {file} does not exist")
        heads.append(HeadSpec(name, role, file))
    if len({h.name for h in heads}) != len(heads):
        problems.append("head names must be unique")
    if problems:
        raise BundleError(f"Bundle {folder} is not usable:\n  - " + "\n  - ".join(problems))
    return BundleSpec(folder, data.get("name") or folder.name, checkpoint, backbone.get("preset"), config,
                      backbone.get("sha256"), tile_size, float(target_mpp), mean, std, tuple(heads))


def write_bundle_manifest(spec: BundleSpec) -> Path:
    spec.folder.mkdir(parents=True, exist_ok=True)
    path = spec.folder / MANIFEST
    atomic_write_text(path, json.dumps(spec.to_manifest(), indent=1))
    return path
