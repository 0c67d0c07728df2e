"""Named backbone configurations, kept as data.

Each preset is an architecture plus the preprocessing its weights expect. Checkpoint loading matches an inferred
architecture against this table to name the model and to supply what weights cannot tell (the number of heads,
position-embedding interpolation settings). Sizes follow DINOv2's hub definitions and the published model cards.
"""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError
from .config import ViTConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    config: ViTConfig
    description: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    feature: str = "cls"  # "cls" or "cls+meanpatch" (Virchow2's recommended embedding)
    testing_only: bool = False


def _dinov2(size: str, dim: int, depth: int, heads: int, registers: bool) -> Preset:
    ffn = "swiglufused" if size == "g" else "mlp"
    config = ViTConfig(
        embed_dim=dim, depth=depth, num_heads=heads, img_size=518, patch_size=14, ffn_layer=ffn, init_values=1e-5,
        block_chunks=0, num_register_tokens=4 if registers else 0,
        # The hub builds register models with antialiased, offset-free interpolation, the others with offset 0.1.
        interpolate_antialias=registers, interpolate_offset=0.0 if registers else 0.1,
    )
    suffix = "-reg" if registers else ""
    return Preset(f"dinov2-vit{size}14{suffix}", config, f"DINOv2 ViT-{size.upper()}/14{' with 4 registers' if registers else ''} (hub layout)")


_PRESETS: list[Preset] = [
    Preset(
        "cervixfm-vitl16",
        ViTConfig(embed_dim=1024, depth=24, num_heads=16, img_size=224, patch_size=16, ffn_layer="swiglufused",
                  mlp_ratio=4, init_values=1e-5, block_chunks=4, num_register_tokens=0,
                  interpolate_antialias=False, interpolate_offset=0.1),
        "CervixFM ViT-L/16 SwiGLU, the published configuration (CervixFM.pth)",
    ),
    *[_dinov2(s, d, n, h, reg) for reg in (False, True)
      for s, d, n, h in (("s", 384, 12, 6), ("b", 768, 12, 12), ("l", 1024, 24, 16), ("g", 1536, 40, 24))],
    Preset("uni", ViTConfig(embed_dim=1024, depth=24, num_heads=16, img_size=224, patch_size=16, ffn_layer="mlp"),
           "UNI ViT-L/16 (timm layout)"),
    Preset("phikon-v2", ViTConfig(embed_dim=1024, depth=24, num_heads=16, img_size=224, patch_size=16, ffn_layer="mlp"),
           "Phikon-v2 ViT-L/16 (DINOv2)"),
    Preset("uni2-h", ViTConfig(embed_dim=1536, depth=24, num_heads=24, img_size=224, patch_size=14,
                               ffn_layer="swiglufused", ffn_hidden_features=4096, num_register_tokens=8),
           "UNI2-h ViT-g/14 SwiGLU with 8 registers (timm layout)"),
    Preset("virchow2", ViTConfig(embed_dim=1280, depth=32, num_heads=16, img_size=224, patch_size=14,
                                 ffn_layer="swiglufused", ffn_hidden_features=3416, num_register_tokens=4),
           "Virchow2 ViT-H/14 SwiGLU with 4 registers (timm layout)", feature="cls+meanpatch"),
    Preset("prov-gigapath", ViTConfig(embed_dim=1536, depth=40, num_heads=24, img_size=224, patch_size=16,
                                      ffn_layer="mlp", ffn_hidden_features=8192),
           "Prov-GigaPath tile encoder ViT-g/16 (timm layout)"),
    Preset("h-optimus-0", ViTConfig(embed_dim=1536, depth=40, num_heads=24, img_size=224, patch_size=14,
                                    ffn_layer="swiglufused", ffn_hidden_features=4096, num_register_tokens=4),
           "H-optimus-0 ViT-g/14 SwiGLU (packed fc1 of 8192) with 4 registers (timm layout)",
           mean=(0.707223, 0.578729, 0.703617), std=(0.211883, 0.230117, 0.177517)),
    # Small configurations for tests and quick experiments on a CPU.
    Preset("cervixfm-tiny", ViTConfig(embed_dim=96, depth=4, num_heads=4, img_size=224, patch_size=16,
                                      ffn_layer="swiglufused", block_chunks=4),
           "CervixFM layout shrunk to 96-d, 4 blocks (tests)", testing_only=True),
    Preset("dinov2-reg-tiny", ViTConfig(embed_dim=64, depth=3, num_heads=2, img_size=518, patch_size=14,
                                        ffn_layer="mlp", num_register_tokens=4, init_values=1.0),
           "DINOv2 register layout shrunk to 64-d, 3 blocks (tests)", testing_only=True),
    Preset("vit-test16", ViTConfig(embed_dim=64, depth=2, num_heads=2, img_size=224, patch_size=16,
                                   ffn_layer="swiglufused", block_chunks=2),
           "Two-block ViT/16 for fast pipeline tests", testing_only=True),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"Unknown preset {name!r}. Known presets: {', '.join(PRESETS)}.") from None


def match_presets(config: ViTConfig) -> list[Preset]:
    """Presets whose weights have the same shapes as ``config`` (pos-embed grid included), best first."""
    key = config.architecture_key()
    same_arch = [p for p in _PRESETS if p.config.architecture_key() == key]
    return sorted(same_arch, key=lambda p: (p.config.img_size != config.img_size, p.testing_only))
