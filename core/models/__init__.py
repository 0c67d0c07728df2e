"""Backbones, checkpoints and presets. ``load_backbone(path)`` is the entry point for users' weights."""

from .config import ViTConfig
from .loader import LoadedBackbone, LoadReport, load_backbone
from .presets import PRESETS, Preset, get_preset
from .vit import VisionTransformer, build_vit

__all__ = ["ViTConfig", "VisionTransformer", "build_vit", "load_backbone", "LoadedBackbone", "LoadReport",
           "PRESETS", "Preset", "get_preset"]
