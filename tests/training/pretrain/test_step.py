"""One training step: the loss terms recomputed crop by crop from the modules, the teacher kept out of autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.pretrain.meta_arch import SSLMetaArch, backbone_config, drop_path_rates
from training.pretrain.trainer import build_data

from pretrain_support import tiny_config


@pytest.fixture()
def step_setup(texture_images, tmp_path):
    cfg = tiny_config(texture_images, tmp_path / "run", "dino.koleo_global_batch=false")
    dataset, collator, _, _ = build_data(cfg, 0, 1)
    batch = collator([dataset[i] for i in range(cfg.train.batch_size_per_gpu)])
    assert batch["masks"].any(), "the test needs some masked patches"
    torch.manual_seed(0)
    meta = SSLMetaArch(cfg, torch.device("cpu"))
    meta.train()
    return cfg, meta, batch


def _ce(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return -(targets * torch.log_softmax(logits / 0.1, dim=-1)).sum(-1)


def test_loss_terms_match_a_crop_by_crop_computation(step_setup):
    cfg, meta, batch = step_setup
    b = cfg.train.batch_size_per_gpu
    n_local = cfg.crops.local_crops_number
    temp = 0.05
    with torch.no_grad():
        g1, g2 = batch["global_crops"][:b], batch["global_crops"][b:]
        m1, m2 = batch["masks"][:b], batch["masks"][b:]
        locals_ = batch["local_crops"].chunk(n_local)
        teacher = meta.teacher["backbone"]
        t_out = [teacher.forward_features(g) for g in (g1, g2)]
        t_probs = [torch.softmax(meta.teacher["dino_head"](o["x_norm_clstoken"]) / temp, -1) for o in t_out]
        student = meta.student["backbone"]
        s_global = [student.forward_features(g, m) for g, m in ((g1, m1), (g2, m2))]
        s_local = [student.forward_features(x) for x in locals_]
        head = meta.student["dino_head"]
        # DINO: each student crop against each teacher global crop, except a global crop against itself
        terms = []
        for i, out in enumerate(s_global):
            terms.append(_ce(t_probs[1 - i], head(out["x_norm_clstoken"])).mean())
        for out in s_local:
            for p in t_probs:
                terms.append(_ce(p, head(out["x_norm_clstoken"])).mean())
        dino = torch.stack(terms).sum() / len(terms)
        # iBOT: masked patches of each global image, weighted 1/(its masked count), averaged over all 2b images
        ibot_sum = 0.0
        for s_out, t_o, masks in zip(s_global, t_out, (m1, m2)):
            for j in range(b):
                idx = masks[j].nonzero().flatten()
                if len(idx):
                    tp = torch.softmax(meta.teacher["dino_head"](t_o["x_norm_patchtokens"][j, idx]) / temp, -1)
                    ibot_sum += _ce(tp, head(s_out["x_norm_patchtokens"][j, idx])).mean()
        ibot = ibot_sum / (2 * b)
        # KoLeo on each global crop's student CLS tokens
        koleo = sum(meta.koleo_loss(o["x_norm_clstoken"]) for o in s_global) * cfg.dino.koleo_loss_weight

    losses = meta.forward_backward(batch, temp, backward=False)
    assert (losses["dino_local_crops_loss"] + losses["dino_global_crops_loss"]).item() == pytest.approx(dino.item(), rel=1e-5)
    assert (2 * losses["ibot_loss"]).item() == pytest.approx(float(ibot), rel=1e-5)
    assert (2 * losses["koleo_loss"]).item() == pytest.approx(koleo.item(), rel=1e-5)
    expected_total = dino + koleo + cfg.ibot.loss_weight * ibot
    assert losses["total_loss"].item() == pytest.approx(float(expected_total), rel=1e-5)


def test_teacher_never_receives_gradients_and_follows_the_student_by_ema(step_setup):
    cfg, meta, batch = step_setup
    optimizer = torch.optim.SGD(meta.student.parameters(), lr=0.1)
    teacher_before = {k: v.clone() for k, v in meta.teacher.state_dict().items()}
    meta.forward_backward(batch, 0.04)
    assert all(p.grad is None and not p.requires_grad for p in meta.teacher.parameters())
    assert all(p.grad is not None for p in meta.student.parameters())
    assert not any(p is q for p in meta.teacher.parameters() for q in meta.student.parameters())
    optimizer.step()
    meta.update_teacher(0.9)
    student = meta.student.state_dict()
    for key, after in meta.teacher.state_dict().items():
        if key.endswith("weight_g"):
            continue  # a fixed buffer
        expected = 0.9 * teacher_before[key] + 0.1 * student[key]
        torch.testing.assert_close(after, expected, rtol=1e-6, atol=1e-7)
    assert not torch.equal(meta.teacher.state_dict()["backbone.pos_embed"], teacher_before["backbone.pos_embed"])


def test_prototype_layer_has_unit_norm_rows_with_fixed_gain(step_setup):
    _, meta, _ = step_setup
    layer = meta.student["dino_head"].last_layer
    assert "weight_g" not in dict(layer.named_parameters())
    norms = layer.weight().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_backbone_from_arch_and_from_preset(texture_images, tmp_path):
    from training.pretrain.config import load_config

    cfg = load_config(None, ["student.arch=vit_small", "student.depth=4", "crops.global_crops_size=112",
                             "student.block_chunks=2", "student.ffn_layer=mlp"])
    c = backbone_config(cfg)
    assert (c.embed_dim, c.depth, c.num_heads, c.img_size, c.block_chunks, c.ffn_layer) == (384, 4, 6, 112, 2, "mlp")
    assert c.drop_path_rate == pytest.approx(0.3) and c.init_values == pytest.approx(1e-5)
    preset = backbone_config(load_config(None, ["student.arch=cervixfm-tiny"]))
    assert (preset.embed_dim, preset.depth, preset.block_chunks, preset.ffn_layer) == (96, 4, 4, "swiglufused")
    default = backbone_config(load_config(None))  # the published CervixFM ViT-L/16
    assert (default.embed_dim, default.depth, default.ffn_hidden, default.block_chunks) == (1024, 24, 2736, 4)
    assert drop_path_rates(4, 0.3, uniform=False) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert drop_path_rates(4, 0.3, uniform=True) == pytest.approx([0.3] * 4)
    np.testing.assert_equal(len(drop_path_rates(1, 0.3, False)), 1)


def test_centre_momentum_is_a_setting(texture_images, tmp_path):
    """``dino.center_momentum`` reaches both centres: after one teacher pass from a zero centre, each is
    (1 - m) x the batch mean of the teacher logits."""
    cfg = tiny_config(texture_images, tmp_path / "run", "dino.center_momentum=0.5")
    meta = SSLMetaArch(cfg, torch.device("cpu"))
    assert meta.dino_loss.center_momentum == meta.ibot_patch_loss.center_momentum == 0.5
    dataset, collator, _, _ = build_data(cfg, 0, 1)
    batch = collator([dataset[i] for i in range(cfg.train.batch_size_per_gpu)])
    with torch.no_grad():
        cls = meta.teacher["backbone"](batch["global_crops"], is_training=True)["x_norm_clstoken"]
        logits = meta.teacher["dino_head"](cls)
    meta.teacher_targets(batch, 0.04)
    assert torch.allclose(meta.dino_loss.center, 0.5 * logits.mean(0, keepdim=True), atol=1e-5)
