"""Pretraining speed: steps/s, the time split of one step, and its cost over plain student forward+backward.

One DINOv2 step = data (decode + multi-crop + collation with masks) + teacher forward (2 global crops, heads, targets)
+ student backbone forward (2 masked global + local crops) + heads and losses (forward and backward) + student
backbone backward + optimiser (clipping, AdamW, EMA teacher update). The baseline is what any supervised training of
the same backbone on the same crops would cost: student backbone forward and backward (loss = mean CLS and patch
tokens), nothing else. The ratio (target <= 1.5) says what the method adds on top of the backbone's own work.

Steps and baselines alternate on the same batches so a busy machine slows both alike; medians over the timed steps.
Defaults: ViT-S/16 (``vit_small``, GELU MLP, 4 block chunks), the reference crops (2 x 224 px + 8 x 96 px), the
reference heads (65536 prototypes, 2048 hidden, 256 bottleneck), batch 8, fp32, one torch thread, real cell crops
from ``../shared/data/cdetector_portion`` (random images when absent). On GPUs the same script measures fp16.

    .venv/bin/python benchmarks/pretrain.py [--arch vit_small] [--batch 8] [--steps 4] [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHARED = Path(os.environ.get("CERVIXFM_SHARED", REPO.parent / "shared"))
CELLS = SHARED / "data" / "cdetector_portion" / "train"
PHASES = ("data", "teacher", "student_forward", "heads_losses", "student_backward", "optimizer")


def image_folder(tmp: Path) -> Path:
    if CELLS.is_dir():
        return CELLS
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(64):
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(tmp / f"{i:03d}.png")
    return tmp


def plain_student_step(meta, batch) -> None:
    """The baseline: the student backbone's forward and backward on the same crops, no heads, no teacher."""
    backbone = meta.student["backbone"]
    crops, masks = [batch["global_crops"]], [batch["masks"]]
    if batch["local_crops"] is not None:
        crops.append(batch["local_crops"])
        masks.append(None)
    with meta._autocast("student", "backbone"):
        outputs = backbone(crops, masks=masks, is_training=True)
    loss = sum(o["x_norm_clstoken"].float().mean() + o["x_norm_patchtokens"].float().mean() for o in outputs)
    loss.backward()
    backbone.zero_grad(set_to_none=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="vit_small", help="student.arch (a DINOv2 arch or a CervixFM preset)")
    parser.add_argument("--batch", type=int, default=8, help="images per step")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="further pretraining settings")
    args = parser.parse_intermixed_args()  # KEY=VALUE may follow options
    torch.set_num_threads(args.threads)

    from training.pretrain.config import MODULES, load_config
    from training.pretrain.meta_arch import SSLMetaArch, StepTimer
    from training.pretrain.schedules import build_schedules
    from training.pretrain.trainer import build_data, make_optimizer, train_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data = image_folder(Path(tmp))
        precision = [f"compute_precision.{role}.{m}.mixed_precision.param_dtype={args.precision}"
                     for role in ("student", "teacher") for m in MODULES]
        arch = [f"student.arch={args.arch}"] + (["student.ffn_layer=mlp"] if args.arch.startswith("vit_") else [])
        cfg = load_config(None, arch + precision + [
            f"train.batch_size_per_gpu={args.batch}", f"train.dataset_path={data}", "train.num_workers=0",
            "train.device=" + device.type] + args.overrides)
        dataset, collator, _, _ = build_data(cfg, 0, 1)
        meta = SSLMetaArch(cfg, device)
        optimizer = make_optimizer(meta, cfg)
        scaler = torch.amp.GradScaler("cuda") if args.precision == "fp16" and device.type == "cuda" else None
        values = build_schedules(cfg, 1).at(20 * cfg.train.OFFICIAL_EPOCH_LENGTH)  # mid-training values
        meta.train()
        n_params = sum(p.numel() for p in meta.student["backbone"].parameters()) / 1e6
        head_params = sum(p.numel() for k, m in meta.student.items() if k != "backbone" for p in m.parameters()) / 1e6
        print(f"student {args.arch}: {n_params:.1f} M backbone + {head_params:.1f} M head parameters; batch "
              f"{args.batch}; crops 2 x {cfg.crops.global_crops_size} + {cfg.crops.local_crops_number} x "
              f"{cfg.crops.local_crops_size}; {args.precision} on {device} ({args.threads} thread(s))")

        per_step: dict[str, list[float]] = {p: [] for p in PHASES}
        full, plain = [], []
        for step in range(args.steps + 1):
            timer = StepTimer(device)
            start = time.perf_counter()
            positions = range(step * args.batch, (step + 1) * args.batch)
            batch = collator([dataset[p] for p in positions])
            timer.add("data", time.perf_counter() - start)
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            timer.sync()
            t0 = time.perf_counter()
            train_step(meta, optimizer, scaler, batch, values, float(cfg.optim.clip_grad), timer)
            timer.sync()
            t1 = time.perf_counter()
            plain_student_step(meta, batch)
            timer.sync()
            t2 = time.perf_counter()
            if step == 0:
                continue  # warm-up
            for p in PHASES:
                per_step[p].append(timer.totals.get(p, 0.0))
            full.append(t1 - t0)
            plain.append(t2 - t1)

    med = {p: statistics.median(v) for p, v in per_step.items()}
    compute = statistics.median(full)
    baseline = statistics.median(plain)
    total = compute + med["data"]
    print(f"\n{'phase':28s} {'s / step':>9s} {'share':>7s}")
    names = {"data": "data (decode, crops, masks)", "teacher": "teacher forward (+ heads)",
             "student_forward": "student backbone forward", "heads_losses": "heads and losses (fwd+bwd)",
             "student_backward": "student backbone backward", "optimizer": "clip + AdamW + EMA"}
    for p in PHASES:
        print(f"{names[p]:28s} {med[p]:9.3f} {med[p] / total:7.1%}")
    print(f"{'step (compute)':28s} {compute:9.3f}")
    print(f"{'plain student fwd+bwd':28s} {baseline:9.3f}")
    print(f"\npretraining: {1 / total:.3f} steps/s ({args.batch / total:.2f} images/s) with data, "
          f"{1 / compute:.3f} steps/s without")
    print(f"ratio to plain student forward+backward on the same crops: {compute / baseline:.2f} "
          f"(target <= 1.5); with data preparation inline: {total / baseline:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
