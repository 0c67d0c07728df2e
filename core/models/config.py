"""Architecture of a DINOv2-style ViT as one plain dataclass, readable from the formats users bring.

Accepted mappings: flat constructor arguments (as in the parity vectors' ``constructor``), ``{"constructor": ...}``,
and DINOv2 training YAMLs with a ``student:`` block (``arch: vit_large`` etc., ``layerscale``, crop size from
``crops.global_crops_size``), which is how CervixFM publishes its configuration.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from .ffn import swiglu_hidden_features

# DINOv2's architecture names (dinov2/models/vision_transformer.py): embed dim, depth, heads.
DINOV2_ARCHS = {
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
    "vit_giant2": (1536, 40, 24),
}
FFN_ALIASES = {"mlp": "mlp", "swiglu": "swiglufused", "swiglufused": "swiglufused"}


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    mlp_ratio: float = 4.0
    ffn_layer: str = "mlp"
    ffn_hidden_features: int | None = None  # exact hidden size; None = derived from mlp_ratio as DINOv2 does
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    init_values: float | None = 1e-5  # layer scale; None = no layer scale
    block_chunks: int = 0
    num_register_tokens: int = 0
    interpolate_antialias: bool = False
    interpolate_offset: float = 0.1
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6

    def __post_init__(self):
        if self.ffn_layer not in FFN_ALIASES:
            raise ConfigError(f"Unknown ffn_layer {self.ffn_layer!r}; use one of {sorted(FFN_ALIASES)}.")
        object.__setattr__(self, "ffn_layer", FFN_ALIASES[self.ffn_layer])
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}.")
        if self.block_chunks and self.depth % self.block_chunks:
            raise ConfigError(f"depth {self.depth} cannot be split into {self.block_chunks} equal block chunks.")
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}.")

    @property
    def ffn_hidden(self) -> int:
        if self.ffn_hidden_features:
            return int(self.ffn_hidden_features)
        if self.ffn_layer == "swiglufused":
            return swiglu_hidden_features(self.embed_dim, self.mlp_ratio)
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    def replace(self, **changes: Any) -> "ViTConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def architecture_key(self) -> tuple:
        """What the weights determine: two configs with the same key load the same state dict."""
        layer_scale = self.init_values is not None and self.init_values != 0
        return (self.embed_dim, self.depth, self.patch_size, self.in_chans, self.ffn_layer, self.ffn_hidden,
                self.num_register_tokens, layer_scale, self.qkv_bias, self.proj_bias, self.ffn_bias)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: "ViTConfig | None" = None) -> "ViTConfig":
        """Build from constructor arguments or a DINOv2 training config; ``base`` supplies unspecified fields."""
        if "constructor" in data:
            data = data["constructor"]
        if "student" in data:
            data = _from_dinov2_yaml(data)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields - {"arch"})
        if unknown:
            raise ConfigError(f"Unknown model configuration keys: {', '.join(unknown)}.")
        values = dict(base.to_dict()) if base else {}
        if "arch" in data:
            values.update(_arch_sizes(data["arch"]))
        values.update({k: v for k, v in data.items() if k != "arch"})
        missing = [k for k in ("embed_dim", "depth", "num_heads") if k not in values]
        if missing:
            raise ConfigError(f"Model configuration lacks {', '.join(missing)} (or an 'arch' such as vit_large).")
        if values.get("init_values") in (0, 0.0):
            values["init_values"] = None
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"Invalid model configuration: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | Path, base: "ViTConfig | None" = None) -> "ViTConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist.")
        text = path.read_text()
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as exc:
            raise ConfigError(f"Config file {path} is not valid YAML/JSON: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"Config file {path} does not hold a mapping of settings.")
        return cls.from_mapping(data, base=base)


def _arch_sizes(arch: str) -> dict[str, int]:
    if arch not in DINOV2_ARCHS:
        raise ConfigError(f"Unknown arch {arch!r}; known: {', '.join(DINOV2_ARCHS)}.")
    dim, depth, heads = DINOV2_ARCHS[arch]
    return {"embed_dim": dim, "depth": depth, "num_heads": heads}


def _from_dinov2_yaml(data: Mapping[str, Any]) -> dict[str, Any]:
    """Translate the ``student:`` block of a DINOv2 training config into constructor arguments."""
    student = data["student"] or {}
    out: dict[str, Any] = {}
    if "arch" in student:
        out["arch"] = student["arch"]
    renames = {"layerscale": "init_values"}
    keep = ("patch_size", "ffn_layer", "block_chunks", "qkv_bias", "proj_bias", "ffn_bias", "num_register_tokens",
            "interpolate_antialias", "interpolate_offset", "drop_path_rate", "in_chans", "mlp_ratio")
    for key, value in student.items():
        if key in keep:
            out[key] = value
        elif key in renames:
            out[renames[key]] = value
    crops = data.get("crops") or {}
    if "global_crops_size" in crops:
        out["img_size"] = int(crops["global_crops_size"])
    return out
