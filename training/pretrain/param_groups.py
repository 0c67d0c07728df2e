"""Optimiser parameter groups of DINOv2: layer-wise lr decay, a slower patch embedding, no decay on some tensors.

Deeper layers adapt faster than the early ones: with decay rate r and depth L, the embeddings (patch embedding,
position table, CLS/mask/register tokens) are layer 0 and get ``r ** (L + 1)``, block i (global index) is layer
i + 1 and gets ``r ** (L - i)``; the final norm and the heads get 1. The patch embedding is further multiplied by
``patch_embed_lr_mult``. Biases, norm weights, layer-scale gammas and the learnt tokens carry no weight decay.
The prototype layer (``last_layer``) is flagged so its learning rate can be held at 0 for the first epoch(s).
Groups sharing (lr multiplier, wd multiplier, last layer) are fused to keep the optimiser cheap.
"""

from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import nn

TOKENS = ("pos_embed", "cls_token", "mask_token", "register_tokens")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.(?:(\d+)\.)?")


def backbone_layer_id(name: str, depth: int, chunked: bool) -> int:
    """0 for embeddings, i + 1 for block i (its global index, also in chunked layouts), depth + 1 otherwise."""
    if name.split(".")[0] in TOKENS or name.startswith("patch_embed."):
        return 0
    m = _BLOCK.search(name)
    if m:
        index = m.group(2) if chunked and m.group(2) is not None else m.group(1)
        return int(index) + 1
    return depth + 1


def param_group_specs(named: Iterable[tuple[str, nn.Parameter]], *, is_backbone: bool, depth: int = 0,
                      chunked: bool = False, layerwise_decay: float = 1.0, patch_embed_lr_mult: float = 1.0,
                      prefix: str = "") -> list[dict]:
    """One entry per trainable parameter: name, lr/wd multipliers and whether it is the prototype layer."""
    specs = []
    for name, param in named:
        if not param.requires_grad:
            continue
        lr_mult = 1.0
        if is_backbone:
            lr_mult = layerwise_decay ** (depth + 1 - backbone_layer_id(name, depth, chunked))
            if name.startswith("patch_embed."):
                lr_mult *= patch_embed_lr_mult
        no_decay = name.endswith(".bias") or "norm" in name or name.endswith("gamma") or name.split(".")[0] in TOKENS
        specs.append({"params": param, "name": prefix + name, "lr_multiplier": lr_mult,
                      "wd_multiplier": 0.0 if no_decay else 1.0, "is_last_layer": "last_layer" in name})
    return specs


def fuse_param_groups(specs: list[dict]) -> list[dict]:
    groups: dict[tuple, dict] = {}
    for spec in specs:
        key = (spec["lr_multiplier"], spec["wd_multiplier"], spec["is_last_layer"])
        group = groups.setdefault(key, {"params": [], "names": [], "lr_multiplier": key[0], "wd_multiplier": key[1],
                                        "is_last_layer": key[2]})
        group["params"].append(spec["params"])
        group["names"].append(spec["name"])
    return list(groups.values())


def build_param_groups(student: nn.ModuleDict, cfg) -> list[dict]:
    backbone = student["backbone"]
    depth = backbone.config.depth
    chunked = backbone.config.block_chunks > 0
    specs = param_group_specs(backbone.named_parameters(), is_backbone=True, depth=depth, chunked=chunked,
                              layerwise_decay=float(cfg.optim.layerwise_decay),
                              patch_embed_lr_mult=float(cfg.optim.patch_embed_lr_mult), prefix="backbone.")
    for key, module in student.items():
        if key != "backbone":
            specs += param_group_specs(module.named_parameters(), is_backbone=False, prefix=f"{key}.")
    return fuse_param_groups(specs)


def apply_schedule(optimizer: torch.optim.Optimizer, lr: float, wd: float, last_layer_lr: float) -> None:
    for group in optimizer.param_groups:
        base = last_layer_lr if group["is_last_layer"] else lr
        group["lr"] = base * group["lr_multiplier"]
        group["weight_decay"] = wd * group["wd_multiplier"]
