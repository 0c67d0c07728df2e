"""Schedules of the reference configuration at given iterations (1 epoch = 1250 iterations, 100 epochs)."""

from __future__ import annotations

import math

import pytest

from training.pretrain.config import load_config
from training.pretrain.schedules import CosineSchedule, build_schedules

EPOCH = 1250
TOTAL = 100 * EPOCH


@pytest.fixture(scope="module")
def reference():
    cfg = load_config(None, ["train.batch_size_per_gpu=64"])
    return build_schedules(cfg, world_size=16)  # global batch 1024: the scaled lr equals base_lr


def test_learning_rate_warms_up_linearly_then_follows_a_cosine_to_min_lr(reference):
    lr = reference.lr
    assert lr(0) == 0.0
    assert lr(10 * EPOCH - 1) == pytest.approx(0.004)  # end of the 10-epoch warm-up (np.linspace includes it)
    assert lr(5 * EPOCH) == pytest.approx(0.004 * 5 * EPOCH / (10 * EPOCH - 1))
    mid = 10 * EPOCH + (TOTAL - 10 * EPOCH) // 2
    assert lr(mid) == pytest.approx(1e-6 + 0.5 * (0.004 - 1e-6))
    assert lr(TOTAL - 1) == pytest.approx(1e-6, abs=1e-8)
    assert lr(TOTAL + 5) == 1e-6


def test_lr_scaling_rule_is_square_root_of_global_batch_over_1024():
    cfg = load_config(None, ["train.batch_size_per_gpu=32"])
    one = build_schedules(cfg, world_size=1)
    assert one.lr(10 * EPOCH - 1) == pytest.approx(0.004 * math.sqrt(32 / 1024))
    four = build_schedules(cfg, world_size=4)
    assert four.lr(10 * EPOCH - 1) == pytest.approx(0.004 * math.sqrt(128 / 1024))


def test_weight_decay_momentum_and_teacher_temperature(reference):
    assert reference.weight_decay(0) == pytest.approx(0.04)
    assert reference.weight_decay(TOTAL // 2) == pytest.approx(0.22)  # halfway along the cosine
    assert reference.weight_decay(TOTAL - 1) == pytest.approx(0.4, abs=1e-6)
    assert reference.momentum(0) == pytest.approx(0.992)
    assert reference.momentum(TOTAL // 2) == pytest.approx(0.996)
    assert reference.momentum(TOTAL) == 1.0
    temp = reference.teacher_temp
    assert temp(0) == pytest.approx(0.04)
    assert temp(30 * EPOCH - 1) == pytest.approx(0.07)
    assert temp(15 * EPOCH) == pytest.approx(0.04 + 0.03 * 15 * EPOCH / (30 * EPOCH - 1))
    assert temp(30 * EPOCH) == pytest.approx(0.07) and temp(TOTAL - 1) == pytest.approx(0.07)


def test_last_layer_is_frozen_for_the_first_epoch(reference):
    assert reference.at(0)["last_layer_lr"] == 0.0
    assert reference.at(EPOCH - 1)["last_layer_lr"] == 0.0
    at = reference.at(EPOCH)
    assert at["last_layer_lr"] == at["lr"] > 0


def test_cosine_schedule_with_freeze_and_warmup_has_the_stated_length():
    s = CosineSchedule(1.0, 0.0, total_iters=10, warmup_iters=3, start_warmup_value=0.5, freeze_iters=2)
    values = [s(i) for i in range(12)]
    assert values[:2] == [0.0, 0.0]
    assert values[2:5] == pytest.approx([0.5, 0.75, 1.0])
    assert values[5] == pytest.approx(1.0)  # cosine starts at the base value
    assert values[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 5)))
    assert values[10:] == [0.0, 0.0]
