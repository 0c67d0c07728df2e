"""Layer-wise lr decay, the patch-embedding multiplier, and which tensors carry weight decay."""

from __future__ import annotations

import pytest
import torch

from training.pretrain.config import load_config
from training.pretrain.meta_arch import SSLMetaArch
from training.pretrain.param_groups import apply_schedule, build_param_groups


@pytest.fixture(scope="module")
def groups():
    cfg = load_config(None, ["student.arch=cervixfm-tiny", "dino.head_n_prototypes=64", "dino.head_hidden_dim=32",
                             "dino.head_bottleneck_dim=16"])  # 4 blocks in 4 chunks
    meta = SSLMetaArch(cfg, torch.device("cpu"))
    fused = build_param_groups(meta.student, cfg)
    by_name = {name: g for g in fused for name in g["names"]}
    return meta, fused, by_name


def test_layerwise_decay_by_global_block_index(groups):
    _, _, g = groups
    depth = 4
    for name in ("backbone.pos_embed", "backbone.cls_token", "backbone.mask_token"):
        assert g[name]["lr_multiplier"] == pytest.approx(0.9 ** (depth + 1))
    assert g["backbone.patch_embed.proj.weight"]["lr_multiplier"] == pytest.approx(0.9 ** (depth + 1) * 0.2)
    for i in range(depth):  # chunk i holds global block i: key blocks.{i}.{i}
        assert g[f"backbone.blocks.{i}.{i}.attn.qkv.weight"]["lr_multiplier"] == pytest.approx(0.9 ** (depth - i))
    assert g["backbone.norm.weight"]["lr_multiplier"] == 1.0
    assert g["dino_head.mlp.0.weight"]["lr_multiplier"] == 1.0


def test_no_weight_decay_on_biases_norms_gammas_and_tokens(groups):
    _, _, g = groups
    no_decay = ["backbone.blocks.0.0.attn.qkv.bias", "backbone.blocks.1.1.norm1.weight", "backbone.norm.bias",
                "backbone.blocks.2.2.ls1.gamma", "backbone.pos_embed", "backbone.cls_token", "dino_head.mlp.0.bias"]
    decay = ["backbone.blocks.0.0.attn.qkv.weight", "backbone.patch_embed.proj.weight", "dino_head.mlp.0.weight",
             "dino_head.last_layer.weight_v"]
    assert all(g[n]["wd_multiplier"] == 0.0 for n in no_decay)
    assert all(g[n]["wd_multiplier"] == 1.0 for n in decay)


def test_every_trainable_parameter_is_in_exactly_one_group_and_the_schedule_applies(groups):
    meta, fused, g = groups
    assert sum(len(x["params"]) for x in fused) == sum(1 for p in meta.student.parameters() if p.requires_grad)
    assert [n for n in g if g[n]["is_last_layer"]] == ["dino_head.last_layer.weight_v"]
    optimizer = torch.optim.AdamW(fused)
    apply_schedule(optimizer, lr=0.01, wd=0.1, last_layer_lr=0.0)
    for group in optimizer.param_groups:
        expected = 0.0 if group["is_last_layer"] else 0.01 * group["lr_multiplier"]
        assert group["lr"] == pytest.approx(expected)
        assert group["weight_decay"] == pytest.approx(0.1 * group["wd_multiplier"])
