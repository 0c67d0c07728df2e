"""The DINOv2 training loop: schedules, AdamW step with per-module clipping, EMA teacher, checkpoints, exports, logs.

``run_pretraining(cfg)`` works in one process and under ``torchrun`` (DDP or FSDP, gloo on CPUs, NCCL on GPUs): the
process group is joined when torchrun describes one, and every collective is skipped otherwise. Per iteration ``t``:
set lr / weight decay / last-layer lr from the schedules; forward the teacher and the student and back-propagate
(fp16 losses scaled on GPUs); clip each student module's gradient norm to ``optim.clip_grad``; AdamW step; teacher
<- EMA of the student with the scheduled momentum; losses averaged over processes for logging (a NaN stops the run).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from core.errors import CervixFMError, ConfigError

from . import distributed
from .checkpoint import (export_teacher, is_training_checkpoint, latest_checkpoint, load_checkpoint, rng_state,
                         save_checkpoint, set_rng_state)
from .config import Config, dataset_paths, scaled_lr, total_iterations
from .meta_arch import SSLMetaArch, StepTimer, autocast_dtype
from .param_groups import apply_schedule, build_param_groups
from .schedules import build_schedules


@dataclasses.dataclass
class PretrainResult:
    output_dir: Path
    start_iteration: int
    end_iteration: int  # the next iteration a resumed run would compute
    history: list[dict[str, Any]]
    exports: dict[str, Path]
    loss_curve: Path | None
    checkpoint: Path | None
    knn: list[dict[str, Any]]


def _log_default(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------ pieces
def build_data(cfg: Config, rank: int, world: int):
    from .augment import MultiCropAugmentation
    from .data import MultiCropCollator, MultiCropDataset, build_sources
    from .masking import make_generator
    from .meta_arch import backbone_config

    images, slides = build_sources(dataset_paths(cfg), cfg.train.slide_tile_size, cfg.train.slide_tile_mpp,
                                   bool(cfg.train.cache_dataset))
    dataset = MultiCropDataset(MultiCropAugmentation.from_config(cfg.crops), cfg.train.seed, images, slides)
    patch = backbone_config(cfg).patch_size
    collator = MultiCropCollator(make_generator(cfg.crops.global_crops_size, patch), cfg.ibot.mask_ratio_min_max,
                                 cfg.ibot.mask_sample_probability, cfg.train.seed, cfg.train.batch_size_per_gpu,
                                 rank, world)
    return dataset, collator, images, slides


def load_initial_weights(meta: SSLMetaArch, cfg: Config, log: Callable[[str], None]) -> None:
    """``MODEL.WEIGHTS`` (a pretraining checkpoint: student, teacher and heads; or backbone weights) and/or
    ``student.pretrained_weights`` (backbone weights), loaded into student and teacher before training starts."""
    from core.models import load_backbone
    from core.models.checkpoint_io import read_weights_file

    for key, path in (("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS), ("student.pretrained_weights", cfg.student.pretrained_weights)):
        if not path:
            continue
        path = Path(str(path)).expanduser()
        obj = read_weights_file(path)
        if is_training_checkpoint(obj):
            meta.student.load_state_dict(obj["student"])
            meta.teacher.load_state_dict(obj["teacher"])
            log(f"{key}: student, teacher and heads from {path} (iteration {obj['iteration']}); training restarts at 0")
            continue
        loaded = load_backbone(path, config=meta.config, strict=True)
        state = loaded.model.state_dict()
        meta.student["backbone"].load_state_dict(state)
        meta.teacher["backbone"].load_state_dict(state)
        log(f"{key}: backbone weights from {path} ({loaded.layout} layout)")


def _teacher_state(meta: SSLMetaArch) -> dict[str, dict[str, torch.Tensor]]:
    from .parallel import full_state_dict

    return {key: full_state_dict(module) for key, module in meta.teacher.items()}


def _plain_teacher_backbone(meta: SSLMetaArch, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    from core.models import build_vit

    model = build_vit(meta.config.replace(drop_path_rate=0.0), init=False)
    model.load_state_dict(state)
    return model.to(meta.device).eval()


def _checkpoint_state(meta: SSLMetaArch, optimizer, scaler, iteration: int, cfg: Config, world: int) -> dict | None:
    """Gathered on every process (collectives), returned on process 0 only."""
    from .parallel import full_state_dict, optimizer_state

    student = {f"{k}.{n}": v for k, m in meta.student.items() for n, v in full_state_dict(m).items()}
    teacher = {f"{k}.{n}": v for k, m in meta.teacher.items() for n, v in full_state_dict(m).items()}
    optim = optimizer_state(meta.student, optimizer)
    rngs = distributed.all_gather_objects(rng_state())
    if not distributed.is_main():
        return None
    return {"iteration": iteration, "student": student, "teacher": teacher, "optimizer": optim,
            "dino_center": meta.dino_loss.center.detach().cpu().clone(),
            "ibot_center": meta.ibot_patch_loss.center.detach().cpu().clone(),
            "scaler": scaler.state_dict() if scaler is not None else None, "rng": rngs, "world_size": world,
            "config": cfg.to_dict()}


def _restore(meta: SSLMetaArch, optimizer, scaler, state: dict, world: int, rank: int,
             log: Callable[[str], None]) -> int:
    from .parallel import load_full_state_dict, load_optimizer_state

    for role in ("student", "teacher"):
        modules = getattr(meta, role)
        for key, module in modules.items():
            prefix = f"{key}."
            load_full_state_dict(module, {k[len(prefix):]: v for k, v in state[role].items() if k.startswith(prefix)})
    load_optimizer_state(meta.student, optimizer, state["optimizer"])
    meta.dino_loss.center.copy_(state["dino_center"].to(meta.device))
    meta.ibot_patch_loss.center.copy_(state["ibot_center"].to(meta.device))
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if int(state.get("world_size", 1)) == world and len(state["rng"]) == world:
        set_rng_state(state["rng"][rank])
    else:
        log(f"resuming with {world} processes from a checkpoint written by {state.get('world_size')}: weights and "
            "optimiser state carry over, random streams start afresh")
        torch.manual_seed(int(state["iteration"]) * 1000 + rank)
    return int(state["iteration"])


def make_optimizer(meta: SSLMetaArch, cfg: Config) -> torch.optim.Optimizer:
    """AdamW over DINOv2's parameter groups; the fused kernel where it applies (15x faster than the default loop on
    a CPU for a 65536-prototype head), the multi-tensor one for sharded (FSDP) parameters."""
    from .parallel import is_sharded

    kwargs = {"foreach": True} if is_sharded(meta.student) else {"fused": True}
    return torch.optim.AdamW(build_param_groups(meta.student, cfg),
                             betas=(float(cfg.optim.adamw_beta1), float(cfg.optim.adamw_beta2)), **kwargs)


def _make_scaler(meta: SSLMetaArch, cfg: Config):
    uses_fp16 = any(autocast_dtype(cfg.compute_precision.student[m].mixed_precision.param_dtype, meta.device)
                    is torch.float16 for m in ("backbone", "dino_head", "ibot_head"))
    if uses_fp16 and cfg.compute_precision.grad_scaler and meta.device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ------------------------------------------------------------------------------------------------------- loop
def train_step(meta: SSLMetaArch, optimizer: torch.optim.Optimizer, scaler, batch: dict, values: dict[str, float],
               clip: float, timer: StepTimer | None = None) -> dict[str, torch.Tensor]:
    """One iteration: scheduled lr/wd, forward and backward, per-module gradient clipping, AdamW, EMA teacher."""
    import contextlib

    apply_schedule(optimizer, values["lr"], values["wd"], values["last_layer_lr"])
    optimizer.zero_grad(set_to_none=True)
    losses = meta.forward_backward(batch, values["teacher_temp"], scaler=scaler, timer=timer)
    with timer.section("optimizer") if timer is not None else contextlib.nullcontext():
        if scaler is not None:
            scaler.unscale_(optimizer)
        if clip > 0:
            for module in meta.student.values():
                torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        meta.update_teacher(values["mom"])
    return losses


def run_pretraining(cfg: Config, log: Callable[[str], None] | None = None, progress: bool = True,
                    timer: StepTimer | None = None, should_stop: Callable[[int], bool] | None = None
                    ) -> PretrainResult:
    """Train (or resume) as ``cfg`` says; returns the logged history and the paths written (process 0).

    ``should_stop(iterations_done)`` is asked after every iteration (single-process runs: every process must give
    the same answer); True ends the run there as ``train.stop_at_iteration`` would, checkpoint and export included,
    which is how a caller cancels or time-boxes a run and reports progress.
    """
    from core.io import atomic_write_text
    from core.models.inference import select_device

    from .data import describe_sources, make_loader
    from .monitor import MetricsLog, plot_loss_curve, progress_bar
    from .parallel import wrap_ddp, wrap_fsdp

    log = log or _log_default
    device = select_device(cfg.train.device)
    joined_here = not distributed.is_enabled() and distributed.setup(device)
    if distributed.launched_by_torchrun() and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank())
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    say = log if main else (lambda message: None)
    try:
        output_dir = Path(str(cfg.train.output_dir)).expanduser()
        if main:
            output_dir.mkdir(parents=True, exist_ok=True)
        distributed.barrier()
        dataset, collator, images, slides = build_data(cfg, rank, world)
        say(f"data: {describe_sources(images, slides)}; {world} process(es) x {cfg.train.batch_size_per_gpu} "
            f"images per step on {device}")

        torch.manual_seed(int(cfg.train.seed) + rank)  # DINOv2: each process its own stream (drop path)
        meta = SSLMetaArch(cfg, device, seed=int(cfg.train.seed))
        load_initial_weights(meta, cfg, say)
        if world > 1:
            wrap_fsdp(meta, cfg) if cfg.train.parallel == "fsdp" else wrap_ddp(meta)
        optimizer = make_optimizer(meta, cfg)
        scaler = _make_scaler(meta, cfg)
        schedules = build_schedules(cfg, world)
        cfg.optim.lr = scaled_lr(cfg, world)
        max_iter = total_iterations(cfg)
        stop = max_iter if cfg.train.stop_at_iteration is None else min(max_iter, int(cfg.train.stop_at_iteration))

        start = 0
        found = latest_checkpoint(output_dir)
        if found is not None:
            start = _restore(meta, optimizer, scaler, load_checkpoint(found), world, rank, say)
            say(f"resumed from {found} at iteration {start}")
        if main:
            atomic_write_text(output_dir / "config.yaml", cfg.to_yaml())
        n_params = sum(p.numel() for p in meta.student["backbone"].parameters())
        say(f"student: ViT {meta.config.embed_dim}-d, {meta.config.depth} blocks, patch {meta.config.patch_size}, "
            f"{n_params / 1e6:.1f} M parameters (backbone); "
            + (f"iterations {start}..{stop - 1} of {max_iter}; " if start < stop else f"already at iteration {start}; ")
            + f"lr {cfg.optim.lr:.3g} (base {cfg.optim.base_lr:g}, {cfg.optim.scaling_rule})")

        metrics = MetricsLog(output_dir, start, enabled=main)
        loader = make_loader(dataset, collator, start, stop, cfg.train.batch_size_per_gpu, rank, world,
                             int(cfg.train.num_workers))
        global_batch = cfg.train.batch_size_per_gpu * world
        bar = progress_bar(stop, start, enabled=main and progress)
        history: list[dict[str, Any]] = []
        knn_results: list[dict[str, Any]] = []
        checkpoint_path = None
        clip = float(cfg.optim.clip_grad)
        meta.train()
        it = start
        tick = time.perf_counter()
        data_wait, since_log = 0.0, 0
        batches = iter(loader)
        while it < stop:
            wait_start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            data_wait += time.perf_counter() - wait_start
            if timer is not None:
                timer.add("data", time.perf_counter() - wait_start)
            if batch["iteration"] != it:
                raise RuntimeError(f"data loader out of step: batch of iteration {batch['iteration']} at {it}")
            batch = _to_device(batch, device)
            values = schedules.at(it)
            losses = train_step(meta, optimizer, scaler, batch, values, clip, timer)
            names = list(losses)
            reduced = distributed.all_reduce_sum(torch.stack([losses[k].float() for k in names])) / world
            reduced = reduced.cpu().tolist()
            if not all(math.isfinite(v) for v in reduced):
                raise CervixFMError(
                    f"The loss became {dict(zip(names, reduced))} at iteration {it}. Lower optim.base_lr, raise "
                    "optim.warmup_epochs, or train in fp32 (compute_precision.*.mixed_precision.param_dtype=fp32); "
                    "the last checkpoint is kept.")
            it += 1
            since_log += 1
            if it % cfg.train.log_period_iterations == 0 or it == stop:
                now = time.perf_counter()
                elapsed, tick = now - tick, now
                row = {"iteration": it - 1, **dict(zip(names, reduced)), **values,
                       "samples_per_s": global_batch * since_log / elapsed if elapsed > 0 else float("nan"),
                       "data_wait_s": data_wait / since_log}
                data_wait, since_log = 0.0, 0
                history.append(row)
                metrics.add(row)
                bar.set_postfix(loss=f"{row['total_loss']:.3f}", lr=f"{values['lr']:.2e}",
                                img_s=f"{row['samples_per_s']:.1f}", refresh=False)
                if progress and bar.disable:  # no terminal (a log file): one line per logged iteration instead
                    say(f"iteration {it - 1}/{stop}: " + ", ".join(
                        f"{k.replace('_loss', '')} {row[k]:.4f}" for k in names) +
                        f", lr {values['lr']:.3g}, {row['samples_per_s']:.1f} img/s")
            bar.update(1)

            if it % cfg.train.checkpoint_period_iterations == 0 and it < stop:
                state = _checkpoint_state(meta, optimizer, scaler, it, cfg, world)
                if main:
                    checkpoint_path = save_checkpoint(output_dir, state, int(cfg.train.checkpoint_keep))
                    metrics.write_csv()
                distributed.barrier()
            period = int(cfg.evaluation.eval_period_iterations)
            if period and it % period == 0 and it < stop:
                _, result = _export_and_evaluate(meta, cfg, output_dir / "eval" / f"training_{it}", it, say)
                knn_results += [result] if result else []
            if should_stop is not None and it < stop and should_stop(it):
                say(f"stopped on request after {it} iterations")
                break
        bar.close()

        state = _checkpoint_state(meta, optimizer, scaler, it, cfg, world)
        if main:
            checkpoint_path = save_checkpoint(output_dir, state, int(cfg.train.checkpoint_keep))
        exports, result = _export_and_evaluate(meta, cfg, output_dir, it, say)
        knn_results += [result] if result else []
        curve = None
        if main:
            metrics.write_csv()
            curve = plot_loss_curve(output_dir / "loss_curve.png", metrics.rows)
            say(f"iteration {it}: teacher exported to {output_dir / 'teacher_backbone.pth'}; checkpoint "
                f"{checkpoint_path}; metrics in {output_dir / 'metrics.csv'}")
        metrics.close()
        distributed.barrier()
        return PretrainResult(output_dir, start, it, history, exports, curve, checkpoint_path, knn_results)
    finally:
        if joined_here:
            distributed.cleanup()


def _export_and_evaluate(meta: SSLMetaArch, cfg: Config, folder: Path, iteration: int, say
                         ) -> tuple[dict[str, Path], dict[str, Any] | None]:
    """Export the teacher (process 0 writes) and run the k-NN evaluation when ``evaluation.knn_data`` is set.

    Runs on forked random generators: building the evaluation model must not move the training's streams, or a
    run with evaluations would differ from one without (and from its own resumed self)."""
    devices = [meta.device] if meta.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return _export_and_evaluate_now(meta, cfg, folder, iteration, say)


def _export_and_evaluate_now(meta: SSLMetaArch, cfg: Config, folder: Path, iteration: int, say
                             ) -> tuple[dict[str, Path], dict[str, Any] | None]:
    teacher = _teacher_state(meta)  # a collective under FSDP: every process takes part
    paths: dict[str, Path] = {}
    result = None
    if distributed.is_main():
        architecture = meta.config.replace(drop_path_rate=0.0).to_dict()
        paths = export_teacher(folder, teacher, meta.config.block_chunks, architecture)
        if cfg.evaluation.knn_data:
            from training.reporting import write_json

            from .knn import evaluate_backbone

            model = _plain_teacher_backbone(meta, teacher["backbone"])
            result = evaluate_backbone(model, cfg.evaluation.knn_data, int(cfg.crops.global_crops_size), meta.device,
                                       int(cfg.evaluation.knn_k), float(cfg.evaluation.knn_temperature),
                                       int(cfg.train.seed))
            result["iteration"] = iteration
            write_json(folder / "knn.json", result)
            say("k-NN at iteration {}: {}".format(iteration, ", ".join(
                f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))))
    distributed.barrier()
    return paths, result


def check_ready(cfg: Config) -> None:
    """Problems to report before any process starts working."""
    if not dataset_paths(cfg):
        raise ConfigError("No pretraining data: set train.dataset_path=FOLDER (cell crops or slides).")
