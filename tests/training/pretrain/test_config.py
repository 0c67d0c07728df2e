"""The reference settings, file merging and command-line overrides."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from training.pretrain.config import load_config, parse_override


def test_reference_defaults_are_dinov2s():
    cfg = load_config()
    assert cfg.dino.head_n_prototypes == 65536 and cfg.dino.head_bottleneck_dim == 256
    assert cfg.dino.head_nlayers == 3 and cfg.dino.head_hidden_dim == 2048 and cfg.dino.koleo_loss_weight == 0.1
    assert cfg.ibot.mask_ratio_min_max == [0.1, 0.5] and cfg.ibot.mask_sample_probability == 0.5
    assert cfg.ibot.separate_head is False and cfg.train.OFFICIAL_EPOCH_LENGTH == 1250
    assert cfg.train.centering == "centering" and cfg.dino.center_momentum == 0.9
    assert (cfg.student.drop_path_rate, cfg.student.layerscale) == (0.3, 1e-5)
    assert (cfg.teacher.momentum_teacher, cfg.teacher.final_momentum_teacher) == (0.992, 1.0)
    assert (cfg.teacher.warmup_teacher_temp, cfg.teacher.teacher_temp, cfg.teacher.warmup_teacher_temp_epochs) == (0.04, 0.07, 30)
    o = cfg.optim
    assert (o.weight_decay, o.weight_decay_end, o.base_lr, o.warmup_epochs, o.min_lr) == (0.04, 0.4, 0.004, 10, 1e-6)
    assert (o.clip_grad, o.freeze_last_layer_epochs, o.scaling_rule) == (3.0, 1, "sqrt_wrt_1024")
    assert (o.patch_embed_lr_mult, o.layerwise_decay, o.adamw_beta1, o.adamw_beta2) == (0.2, 0.9, 0.9, 0.999)
    c = cfg.crops
    assert c.global_crops_scale == [0.32, 1.0] and c.local_crops_scale == [0.05, 0.32]
    assert (c.local_crops_number, c.global_crops_size, c.local_crops_size) == (8, 224, 96)
    assert cfg.compute_precision.student.backbone.sharding_strategy == "SHARD_GRAD_OP"


def test_overrides_are_parsed_and_typed_like_the_reference():
    cfg = load_config("default", ["optim.base_lr=1e-3", "optim.epochs=3", "optim.warmup_epochs=1",
                                  "teacher.warmup_teacher_temp_epochs=2", "crops.global_crops_scale=[0.4, 1]",
                                  "ibot.separate_head=true", "student.arch=vit_small", "teacher.final_momentum_teacher=1",
                                  "train.dataset_path=[a, b]", "train.stop_at_iteration=7"])
    assert cfg.optim.base_lr == 0.001 and isinstance(cfg.optim.base_lr, float)
    assert cfg.optim.epochs == 3 and cfg.crops.global_crops_scale == [0.4, 1.0]
    assert cfg.ibot.separate_head is True and cfg.student.arch == "vit_small"
    assert isinstance(cfg.teacher.final_momentum_teacher, float)
    assert cfg.train.dataset_path == ["a", "b"] and cfg.train.stop_at_iteration == 7
    assert parse_override("a.b=") == (["a", "b"], "")


@pytest.mark.parametrize("override, message", [
    ("optim.base_rl=0.1", "optim.base_lr"),
    ("optimizer.lr=0.1", "Unknown setting"),
    ("optim.epochs=1.5", "whole number"),
    ("optim.base_lr=fast", "must be a number"),
    ("optim=3", "group of settings"),
    ("train.centering=mean", "centering"),
    ("dino.center_momentum=1", "center_momentum"),
    ("ibot.mask_ratio_min_max=[0.6, 0.5]", "mask_ratio_min_max"),
    ("noequals", "key=value"),
])
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_a_user_file_is_merged_over_the_reference_and_checked(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("optim:\n  epochs: 5\n  warmup_epochs: 1\nteacher:\n  warmup_teacher_temp_epochs: 2\n"
                    "crops:\n  local_crops_number: 2\n")
    cfg = load_config(path, ["optim.epochs=6"])
    assert cfg.optim.epochs == 6 and cfg.crops.local_crops_number == 2 and cfg.optim.base_lr == 0.004
    path.write_text("optim:\n  epohcs: 5\n")
    with pytest.raises(ConfigError, match="epochs"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_tiny_preset_is_small_and_round_trips_through_yaml(tmp_path):
    cfg = load_config("tiny")
    assert cfg.dino.head_n_prototypes == 4096 and cfg.crops.global_crops_size == 112
    assert cfg.student.embed_dim == 192 and cfg.student.depth == 6
    path = tmp_path / "dump.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path).to_dict() == cfg.to_dict()
