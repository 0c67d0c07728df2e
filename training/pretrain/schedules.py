"""Every schedule of DINOv2 pretraining as a function of the iteration (1 epoch = ``OFFICIAL_EPOCH_LENGTH`` iterations).

Values depend only on the iteration number, never on a running state, so a resumed run takes exactly the values the
uninterrupted run would have. The shapes are DINOv2's ``CosineScheduler``: an optional frozen stretch at 0, a linear
warm-up from ``start_warmup_value`` to ``base`` over ``warmup_iters`` (both ends included, as ``np.linspace``), then
a half cosine from ``base`` to ``final`` over the remaining iterations, and ``final`` from ``total_iters`` on.
"""

from __future__ import annotations

import dataclasses
import math

from .config import Config, scaled_lr, total_iterations


@dataclasses.dataclass(frozen=True)
class CosineSchedule:
    base: float
    final: float
    total_iters: int
    warmup_iters: int = 0
    start_warmup_value: float = 0.0
    freeze_iters: int = 0

    def __post_init__(self):
        if self.warmup_iters + self.freeze_iters > self.total_iters:
            raise ValueError("warm-up and frozen iterations exceed the schedule length")

    def __call__(self, it: int) -> float:
        if it >= self.total_iters:
            return float(self.final)
        if it < self.freeze_iters:
            return 0.0
        it -= self.freeze_iters
        if it < self.warmup_iters:
            if self.warmup_iters == 1:
                return float(self.base)
            return float(self.start_warmup_value + (self.base - self.start_warmup_value) * it / (self.warmup_iters - 1))
        it -= self.warmup_iters
        n = self.total_iters - self.warmup_iters - self.freeze_iters
        return float(self.final + 0.5 * (self.base - self.final) * (1 + math.cos(math.pi * it / n)))


@dataclasses.dataclass(frozen=True)
class Schedules:
    lr: CosineSchedule
    weight_decay: CosineSchedule
    momentum: CosineSchedule
    teacher_temp: CosineSchedule
    freeze_last_layer_iters: int

    def at(self, it: int) -> dict[str, float]:
        lr = self.lr(it)
        return {
            "lr": lr,
            "wd": self.weight_decay(it),
            "mom": self.momentum(it),
            "teacher_temp": self.teacher_temp(it),
            "last_layer_lr": 0.0 if it < self.freeze_last_layer_iters else lr,
        }


def build_schedules(cfg: Config, world_size: int) -> Schedules:
    epoch = int(cfg.train.OFFICIAL_EPOCH_LENGTH)
    total = total_iterations(cfg)
    o, t = cfg.optim, cfg.teacher
    lr = CosineSchedule(scaled_lr(cfg, world_size), float(o.min_lr), total, warmup_iters=int(o.warmup_epochs * epoch))
    wd = CosineSchedule(float(o.weight_decay), float(o.weight_decay_end), total)
    mom = CosineSchedule(float(t.momentum_teacher), float(t.final_momentum_teacher), total)
    warm = int(t.warmup_teacher_temp_epochs * epoch)
    temp = CosineSchedule(float(t.teacher_temp), float(t.teacher_temp), warm, warmup_iters=warm,
                          start_warmup_value=float(t.warmup_teacher_temp))
    return Schedules(lr, wd, mom, temp, int(o.freeze_last_layer_epochs * epoch))
