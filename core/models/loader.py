"""Load a backbone from a weights file without the user having to know its layout or architecture.

``load_backbone(path)`` reads the file safely, unwraps training containers, converts the layout, infers the
architecture from key names and shapes, names the matching preset, and loads strictly, reporting every missing,
unexpected or mis-shaped key in words when something does not fit.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, ConfigError
from .checkpoint_io import read_weights_file
from .config import ViTConfig
from .layouts import STANDARD_HEADS, Canonical, extract_backbone, infer_architecture, to_canonical, to_model_keys
from .preprocessing import Preprocessing
from .presets import Preset, get_preset, match_presets
from .vit import VisionTransformer

ConfigLike = ViTConfig | Mapping[str, Any] | str | os.PathLike | None


@dataclasses.dataclass
class LoadReport:
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple, tuple]]  # key, file shape, model shape

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 8) -> str:
        lines = []
        for title, items in (("missing from the file", self.missing), ("unexpected in the file", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f", … and {len(items) - limit} more" if len(items) > limit else "")
                lines.append(f"  {len(items)} keys {title}: {shown}")
        if self.mismatched:
            lines.append(f"  {len(self.mismatched)} keys with different shapes (file vs model):")
            for key, got, want in self.mismatched[:limit]:
                lines.append(f"    {key}: {list(got)} vs {list(want)}")
            if len(self.mismatched) > limit:
                lines.append(f"    … and {len(self.mismatched) - limit} more")
        return "\n".join(lines)


@dataclasses.dataclass
class LoadedBackbone:
    model: VisionTransformer
    config: ViTConfig
    preset: Preset | None
    layout: str
    report: LoadReport
    notes: list[str]
    path: Path | None = None
    input_size: int = 224  # the published protocol; a backbone pretrained at another size is best fed at that size

    @property
    def name(self) -> str:
        return self.preset.name if self.preset else "custom ViT"

    @property
    def feature(self) -> str:
        return self.preset.feature if self.preset else "cls"

    def preprocessing(self, size: int | None = None) -> Preprocessing:
        """Input preparation for these weights: crops of ``input_size`` (224 px, the published protocol, unless the
        loader was asked for another) and the preset's mean/std."""
        size = int(size or self.input_size)
        if self.preset:
            return Preprocessing(size=size, mean=self.preset.mean, std=self.preset.std)
        return Preprocessing(size=size)

    def summary(self) -> str:
        c = self.config
        ffn = f"{c.ffn_layer} {c.ffn_hidden}"
        text = (f"{self.name}: ViT {c.embed_dim}-d, {c.depth} blocks, {c.num_heads} heads, patch {c.patch_size}, "
                f"{ffn}, {c.num_register_tokens} registers, trained at {c.img_size}px; file layout {self.layout}")
        return text


def compare_state_dicts(given: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> LoadReport:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [(k, tuple(given[k].shape), tuple(expected[k].shape))
                  for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    return LoadReport(missing, unexpected, mismatched)


def resolve_config(config: ConfigLike, preset: str | None, base: ViTConfig | None = None) -> ViTConfig | None:
    """A user's config (object, mapping, or YAML/JSON path) layered over a preset; None when neither is given."""
    cfg = get_preset(preset).config if preset else base
    if config is None:
        return cfg
    if isinstance(config, ViTConfig):
        return config
    if isinstance(config, Mapping):
        return ViTConfig.from_mapping(config, base=cfg)
    return ViTConfig.from_file(config, base=cfg)


def infer_config(canonical: Canonical) -> tuple[ViTConfig, Preset | None]:
    """The architecture of a canonical state dict, completed from the best-matching preset or standard sizes."""
    args = infer_architecture(canonical)
    probe = ViTConfig(num_heads=1, **args)
    matches = match_presets(probe)
    if matches:
        best = matches[0]
        return best.config.replace(img_size=args["img_size"], block_chunks=args["block_chunks"]), best
    heads = STANDARD_HEADS.get(args["embed_dim"])
    if heads is None:
        raise ConfigError(
            f"The checkpoint is a {args['embed_dim']}-d, {args['depth']}-block ViT, which matches no preset, and its "
            "number of attention heads cannot be read from the weights. Pass --config (YAML/JSON with num_heads) "
            "or --preset."
        )
    return ViTConfig(num_heads=heads, **args), None


def build_from_state_dict(
    canonical: Canonical,
    config: ViTConfig | None = None,
    strict: bool = True,
    source: str = "checkpoint",
    label: str | None = None,
) -> tuple[VisionTransformer, ViTConfig, Preset | None, LoadReport]:
    if config is None:
        config, preset = infer_config(canonical)
    else:
        inferred_key = None
        try:
            inferred_key = ViTConfig(num_heads=1, **infer_architecture(canonical)).architecture_key()
        except (CheckpointError, ConfigError):
            pass
        preset = next((p for p in match_presets(config) if p.config.architecture_key() == inferred_key), None)
    with torch.device("meta"):
        model = VisionTransformer(config)
    expected = model.state_dict()
    given = to_model_keys(canonical.state_dict, config)
    if not canonical.has_mask_token and "mask_token" in expected:
        given.setdefault("mask_token", torch.zeros(expected["mask_token"].shape))
    report = compare_state_dicts(given, expected)
    if strict and not report.ok:
        what = label or (preset.name if preset else None) or f"{config.embed_dim}-d {config.depth}-block ViT/{config.patch_size}"
        raise CheckpointError(f"{source} does not fit the requested architecture ({what}):\n{report.describe()}")
    model = model.to_empty(device="cpu")
    if strict:
        model.load_state_dict(given, strict=True)
    else:
        model.init_weights()
        usable = {k: v for k, v in given.items()
                  if k in expected and tuple(v.shape) == tuple(expected[k].shape)}
        model.load_state_dict(usable, strict=False)
    return model.eval(), config, preset, report


def load_backbone(
    path: str | os.PathLike,
    config: ConfigLike = None,
    preset: str | None = None,
    strict: bool = True,
    device: str | torch.device = "cpu",
    input_size: int | str = 224,
) -> LoadedBackbone:
    """Read a backbone checkpoint in any supported layout and return the loaded model in eval mode.

    ``config``/``preset`` override the inferred architecture (needed only for non-standard sizes). With
    ``strict=False`` mismatching tensors are skipped and listed in the report instead of raising. ``input_size``:
    pixels, or ``"trained"`` for the size the weights were trained at (``resolve_input_size``).
    """
    path = Path(path)
    obj = read_weights_file(path)
    backbone, notes = extract_backbone(obj, source=str(path))
    canonical = to_canonical(backbone)
    notes = notes + canonical.notes
    user_config = resolve_config(config, preset)
    model, cfg, matched, report = build_from_state_dict(canonical, user_config, strict=strict, source=str(path),
                                                       label=preset)
    if preset and matched is None:
        matched = get_preset(preset)
    return LoadedBackbone(model.to(device), cfg, matched, canonical.layout, report, notes, path,
                          resolve_input_size(input_size, cfg))


def resolve_input_size(value: int | str, config: ViTConfig) -> int:
    """An input size in pixels from a number or ``"trained"`` (the backbone's own ``img_size``), checked against
    the patch size: the patch grid must tile the crop."""
    if str(value).strip().lower() == "trained":
        return int(config.img_size)
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"The input size must be a number of pixels or 'trained', not {value!r}.") from None
    if size < config.patch_size or size % config.patch_size:
        nearest = max(1, round(size / config.patch_size)) * config.patch_size
        raise ConfigError(f"Input size {size} px is not a positive multiple of this backbone's patch size "
                          f"({config.patch_size} px); try {nearest}.")
    return size


def input_size_note(loaded: LoadedBackbone) -> str | None:
    """For tools with ``--size``: a word when crops are enlarged beyond the scale the backbone was trained at (a
    518-px DINOv2 table used at 224 is the published practice, so smaller inputs need none)."""
    if loaded.input_size > loaded.config.img_size:
        return (f"this backbone was trained at {loaded.config.img_size} px and is fed {loaded.input_size}-px crops "
                "(its position table interpolated); --size trained feeds it its own size, where its features are best")
    return None
