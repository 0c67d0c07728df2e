"""Shared by the pretraining tests: a tiny configuration that makes a training step take milliseconds."""

from __future__ import annotations

from pathlib import Path

# A two-block 64-d ViT/16 on 64-px global and 32-px local crops, a 256-prototype head.
TINY = [
    "student.arch=vit-test16", "student.drop_path_rate=0.0",
    "crops.global_crops_size=64", "crops.local_crops_size=32", "crops.local_crops_number=2",
    "dino.head_n_prototypes=256", "dino.head_hidden_dim=64", "dino.head_bottleneck_dim=32",
    "ibot.head_n_prototypes=256", "ibot.head_hidden_dim=64", "ibot.head_bottleneck_dim=32",
    "train.OFFICIAL_EPOCH_LENGTH=2", "optim.epochs=2", "optim.warmup_epochs=1", "optim.freeze_last_layer_epochs=0",
    "teacher.warmup_teacher_temp_epochs=1", "train.log_period_iterations=1", "train.num_workers=0",
    "evaluation.eval_period_iterations=0", "train.batch_size_per_gpu=4",
]


def tiny_config(data: Path, out: Path, *extra: str):
    from training.pretrain.config import load_config

    return load_config("tiny", TINY + [f"train.dataset_path={data}", f"train.output_dir={out}", *extra])
