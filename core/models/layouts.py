"""Checkpoint layouts of DINOv2-style ViTs and conversions between them.

Every layout is converted to one canonical form: DINOv2 key names with flat blocks (``blocks.{i}``), SwiGLU as
``mlp.w12``/``mlp.w3``, the CLS position in ``pos_embed[:, 0]``, registers in ``register_tokens``. Layouts:

- ``cervixfm``: DINOv2 names with chunked blocks (``blocks.{chunk}.{i}``), as in CervixFM.pth and DINOv2 training.
- ``dinov2-hub``: DINOv2 names with flat blocks (the public hub weights).
- ``timm``: flat blocks, SwiGLU packed in ``mlp.fc1``/``mlp.fc2``, no ``mask_token``; register models keep registers
  in ``reg_token`` and fold ``pos_embed[:, 0]`` into ``cls_token`` (``pos_embed`` then covers patches only).
Wrappers are unwrapped first: ``{"teacher": ...}``, ``{"model"|"state_dict": ...}``, ``backbone.``/``module.``
prefixes, DINO/iBOT heads.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from typing import Any, Mapping

import torch

from ..errors import CheckpointError
from .config import ViTConfig
from .ffn import swiglu_hidden_features

ANCHOR = "patch_embed.proj.weight"
HEAD_PREFIXES = ("dino_head.", "ibot_head.", "head.")
_CHUNKED = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)$")
_FLAT = re.compile(r"^blocks\.(\d+)\.(.+)$")
# Heads per embedding width for the standard ViT sizes (head dim 64, ViT-H 80): unambiguous in practice.
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1536: 24}


@dataclasses.dataclass
class Canonical:
    """A backbone state dict in canonical form, with what was learnt while getting there."""

    state_dict: dict[str, torch.Tensor]
    layout: str
    block_chunks: int
    notes: list[str]
    has_mask_token: bool


def extract_backbone(obj: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Find the backbone's tensors inside whatever container a training framework saved."""
    notes: list[str] = []
    tensors = _flatten_tensors(obj)
    if not tensors:
        raise CheckpointError(f"{source} holds no tensors: it is not a model checkpoint.")
    anchors = [k for k in tensors if k.endswith(ANCHOR)]
    if not anchors:
        sample = ", ".join(list(tensors)[:5])
        raise CheckpointError(
            f"{source} holds no ViT backbone (no key ending in '{ANCHOR}'); its keys start with: {sample}. "
            "Is this the right file?"
        )
    # DINOv2 training checkpoints hold student and teacher: the teacher is the model to use.
    anchors.sort(key=lambda k: (not k.startswith("teacher"), "student" in k, len(k)))
    prefix = anchors[0][: -len(ANCHOR)]
    if len(anchors) > 1:
        notes.append(f"several backbones in the file; using '{prefix.rstrip('.') or '<root>'}'")
    elif prefix:
        notes.append(f"stripped prefix '{prefix}'")
    backbone = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    dropped = Counter(k.split(".")[0] for k in backbone if k.startswith(HEAD_PREFIXES))
    backbone = {k: v for k, v in backbone.items() if not k.startswith(HEAD_PREFIXES)}
    for name, count in sorted(dropped.items()):
        notes.append(f"ignored {count} '{name}' tensors (not part of the backbone)")
    ignored_outside = len(tensors) - len(backbone) - sum(dropped.values())
    if ignored_outside:
        notes.append(f"ignored {ignored_outside} tensors outside the backbone (other models, optimiser state)")
    return backbone, notes


def _flatten_tensors(obj: Any, prefix: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
    """Nested dicts of tensors as one flat dict with dotted keys (``{"teacher": {"backbone.x": t}}`` -> ``teacher.backbone.x``)."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, Mapping) and depth < 6:
        for key, value in obj.items():
            if isinstance(key, str):
                out.update(_flatten_tensors(value, f"{prefix}{key}.", depth + 1))
    return out


def detect_layout(sd: Mapping[str, torch.Tensor]) -> str:
    if any(_CHUNKED.match(k) for k in sd):
        return "cervixfm"
    timm_markers = "reg_token" in sd or ("mask_token" not in sd) or _is_packed_swiglu(sd)
    return "timm" if timm_markers else "dinov2-hub"


def _is_packed_swiglu(sd: Mapping[str, torch.Tensor]) -> bool:
    fc1, fc2 = sd.get("blocks.0.mlp.fc1.weight"), sd.get("blocks.0.mlp.fc2.weight")
    return fc1 is not None and fc2 is not None and fc1.shape[0] == 2 * fc2.shape[1]


def to_canonical(sd: Mapping[str, torch.Tensor]) -> Canonical:
    layout = detect_layout(sd)
    notes: list[str] = []
    out: dict[str, torch.Tensor] = {}
    chunks: set[int] = set()
    packed = _is_packed_swiglu(sd)
    for key, value in sd.items():
        m = _CHUNKED.match(key)
        if m:
            chunks.add(int(m.group(1)))
            key = f"blocks.{m.group(2)}.{m.group(3)}"
        if packed:
            key = re.sub(r"^(blocks\.\d+\.mlp\.)fc1\.", r"\1w12.", key)
            key = re.sub(r"^(blocks\.\d+\.mlp\.)fc2\.", r"\1w3.", key)
        if key == "reg_token":
            key = "register_tokens"
        out[key] = value
    if "pos_embed" in out and _patch_only_pos_embed(out["pos_embed"]):
        pos = out["pos_embed"]
        out["pos_embed"] = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1)
        notes.append("position table without a CLS entry (timm no_embed_class): CLS position set to zero, "
                     "which is exact because the CLS token already includes it")
    has_mask = "mask_token" in out
    if has_mask:
        out["mask_token"] = out["mask_token"].reshape(1, -1)
    elif "cls_token" in out:
        out["mask_token"] = out["cls_token"].new_zeros(1, out["cls_token"].shape[-1])
        notes.append("no mask_token in the file (timm layout): set to zeros; only masked pretraining uses it")
    return Canonical(out, layout, len(chunks), notes, has_mask)


def _patch_only_pos_embed(pos: torch.Tensor) -> bool:
    n = pos.shape[1]
    return _is_square(n) and not _is_square(n - 1)


def _is_square(n: int) -> bool:
    return n >= 1 and math.isqrt(n) ** 2 == n


def infer_architecture(canonical: Canonical) -> dict[str, Any]:
    """Constructor arguments that the tensors determine (everything except heads and interpolation settings)."""
    sd = canonical.state_dict
    for key in (ANCHOR, "pos_embed", "cls_token", "norm.weight"):
        if key not in sd:
            raise CheckpointError(f"The checkpoint's backbone has no '{key}': it is incomplete or not a ViT.")
    proj = sd[ANCHOR]
    if proj.ndim != 4 or proj.shape[2] != proj.shape[3]:
        raise CheckpointError(f"'{ANCHOR}' has shape {list(proj.shape)}; expected a square patch convolution.")
    dim, in_chans, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    block_ids = sorted({int(m.group(1)) for k in sd if (m := _FLAT.match(k))})
    if not block_ids:
        raise CheckpointError("The checkpoint has no transformer blocks ('blocks.*').")
    depth = block_ids[-1] + 1
    if block_ids != list(range(depth)):
        missing = sorted(set(range(depth)) - set(block_ids))
        raise CheckpointError(f"The checkpoint lacks transformer blocks {missing}: the file is incomplete.")
    n_pos = int(sd["pos_embed"].shape[1]) - 1
    if not _is_square(n_pos):
        raise CheckpointError(f"pos_embed holds {n_pos} patch positions, not a square grid.")
    args: dict[str, Any] = {
        "embed_dim": dim, "depth": depth, "patch_size": patch, "in_chans": in_chans,
        "img_size": math.isqrt(n_pos) * patch, "block_chunks": canonical.block_chunks,
        "num_register_tokens": int(sd["register_tokens"].shape[1]) if "register_tokens" in sd else 0,
        "init_values": 1e-5 if "blocks.0.ls1.gamma" in sd else None,
        "qkv_bias": "blocks.0.attn.qkv.bias" in sd,
        "proj_bias": "blocks.0.attn.proj.bias" in sd,
    }
    if "blocks.0.mlp.w12.weight" in sd:
        hidden = int(sd["blocks.0.mlp.w12.weight"].shape[0]) // 2
        args.update(ffn_layer="swiglufused", ffn_bias="blocks.0.mlp.w12.bias" in sd)
        if hidden != swiglu_hidden_features(dim, 4):
            args["ffn_hidden_features"] = hidden
    elif "blocks.0.mlp.fc1.weight" in sd:
        hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
        args.update(ffn_layer="mlp", ffn_bias="blocks.0.mlp.fc1.bias" in sd)
        if hidden != 4 * dim:
            args["ffn_hidden_features"] = hidden
    else:
        raise CheckpointError("Block 0 has neither an MLP (mlp.fc1) nor a SwiGLU (mlp.w12) feed-forward layer.")
    return args


def to_model_keys(canonical_sd: Mapping[str, torch.Tensor], config: ViTConfig) -> dict[str, torch.Tensor]:
    """Canonical keys renamed to a model built from ``config`` (chunked or flat)."""
    if config.block_chunks <= 0:
        return dict(canonical_sd)
    size = config.depth // config.block_chunks
    out = {}
    for key, value in canonical_sd.items():
        m = _FLAT.match(key)
        out[f"blocks.{int(m.group(1)) // size}.{key[len('blocks.'):]}" if m else key] = value
    return out


def model_to_canonical(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return to_canonical(sd).state_dict


# ---------------------------------------------------------------------------------------------------- exports
def export_cervixfm(canonical_sd: Mapping[str, torch.Tensor], block_chunks: int = 4) -> dict[str, torch.Tensor]:
    """Chunked DINOv2 layout, as CervixFM.pth (``block_chunks=0`` gives the flat hub layout)."""
    depth = 1 + max(int(m.group(1)) for k in canonical_sd if (m := _FLAT.match(k)))
    if block_chunks and depth % block_chunks:
        raise CheckpointError(f"Cannot split {depth} blocks into {block_chunks} chunks.")
    out: dict[str, torch.Tensor] = {}
    size = depth // block_chunks if block_chunks else 0
    for key, value in canonical_sd.items():
        m = _FLAT.match(key)
        if m and block_chunks:
            key = f"blocks.{int(m.group(1)) // size}.{key[len('blocks.'):]}"
        out[key] = value
    return out


def export_timm(canonical_sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``VisionTransformer`` layout (strict-loadable into the equivalent timm model; no mask token)."""
    out: dict[str, torch.Tensor] = {}
    registers = "register_tokens" in canonical_sd
    for key, value in canonical_sd.items():
        if key == "mask_token":
            continue
        key = re.sub(r"^(blocks\.\d+\.mlp\.)w12\.", r"\1fc1.", key)
        key = re.sub(r"^(blocks\.\d+\.mlp\.)w3\.", r"\1fc2.", key)
        out[key] = value
    if registers:
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = canonical_sd["cls_token"] + canonical_sd["pos_embed"][:, :1]
        out["pos_embed"] = canonical_sd["pos_embed"][:, 1:]
    return out


def export_teacher(canonical_sd: Mapping[str, torch.Tensor], block_chunks: int = 4) -> dict[str, Any]:
    """``{"teacher": {"backbone.…"}}`` as DINOv2 training exports it."""
    return {"teacher": {f"backbone.{k}": v for k, v in export_cervixfm(canonical_sd, block_chunks).items()}}


def import_timm(timm_sd: Mapping[str, torch.Tensor], mask_token: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Canonical state dict from a timm one; ``mask_token`` restores what the timm layout cannot hold."""
    out = to_canonical(timm_sd).state_dict
    if mask_token is not None:
        out["mask_token"] = mask_token.reshape(1, -1)
    return out
