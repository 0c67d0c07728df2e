"""GPU throughput of the CervixFM ViT-L/16 backbone by precision and attention kernel, against timm, and one DINOv2
pretraining step.

Run from the repository root on a CUDA machine (about 2-3 minutes on one H100)::

    python3 benchmarks/gpu.py [--batch-size 64] [--reps 10] [--data DIR] [--skip-pretrain]

What it prints, all at batch 64 (``--batch-size``), 224 px, under ``torch.inference_mode()``:

1. images/s (median of ``--reps`` forwards timed with CUDA events after warm-ups; paths of one precision timed in
   alternating order) of our backbone (preset ``cervixfm-vitl16``, random init) with xformers attention and with
   PyTorch SDPA (``Attention.use_xformers``), and of timm's equivalent ViT carrying the same weights (built as
   ``benchmarks/backbone.py`` builds it, torchvision stand-in included), for fp32 (TF32 off), TF32, bf16 autocast
   and fp16 autocast; ours/timm per precision.
2. achieved TFLOP/s from the analytically counted FLOPs (``backbone.backbone_flops``: GEMMs plus attention) and the
   fraction of the GPU's measured matmul rate at the same precision (``torch.mm`` at the model's GEMM shapes,
   best of several rounds, weighted by each shape's FLOPs), the bf16 one being the headline.
3. peak GPU memory of one forward beyond what was allocated before it (activations and workspaces; each fp32
   model's weights, 1.2 GB, are resident throughout).
4. fidelity: min over real cell crops of the cosine between each path's CLS feature and fp32 SDPA's, on "stress"
   weights (layer scales 0.1), where features depend on the image (with DINOv2's 1e-5 every path looks faithful).
5. one DINOv2 pretraining step (student ViT-L, batch 32, bf16 and fp16 with a grad scaler) by running
   ``benchmarks/pretrain.py`` in a subprocess: its phase table and steps/s.

Without CUDA it says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (str(REPO), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import backbone as cpu_bench  # noqa: E402  benchmarks/backbone.py: FLOPs, GEMM shapes, timm twin, crop loader

from core.models import build_vit, get_preset  # noqa: E402
from core.models.attention import Attention, xformers_available, xformers_runs  # noqa: E402

PRESET = "cervixfm-vitl16"
STRESS_LAYER_SCALE = 0.1
SHARED = Path(os.environ.get("CERVIXFM_SHARED", REPO.parent / "shared"))
# name -> (TF32 on, autocast dtype, torch.mm dtype for the GEMM rate)
PRECISIONS = {
    "fp32": (False, None, torch.float32),
    "tf32": (True, None, torch.float32),
    "bf16": (False, torch.bfloat16, torch.bfloat16),
    "fp16": (False, torch.float16, torch.float16),
}


def log(msg: str = "") -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def precision_mode(name: str):
    """TF32 (matmul and cuDNN) as the precision says, autocast for bf16/fp16; flags restored afterwards."""
    tf32, dtype, _ = PRECISIONS[name]
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        with torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext():
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def with_kernel(model: torch.nn.Module, use_xformers: bool | None) -> Callable:
    """fn(x) -> forward_features; ``use_xformers`` sets the class-wide switch for the call (None: timm's model)."""
    if use_xformers is None:
        return lambda x: {"x_norm_clstoken": model.forward_features(x)[:, 0]}

    def run(x):
        Attention.use_xformers = use_xformers
        return model(x, is_training=True)

    return run


# ---------------------------------------------------------------------------------------------------- timing
def time_paths(fns: dict[str, Callable], x: torch.Tensor, precision: str, warmup: int, reps: int
               ) -> dict[str, list[float]]:
    """Seconds per forward (CUDA events) of each path, interleaved, the order reversed every round."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.inference_mode(), precision_mode(precision):
        for _ in range(warmup):
            for n in names:
                fns[n](x)
        torch.cuda.synchronize()
        for r in range(reps):
            for n in (names if r % 2 == 0 else names[::-1]):
                start.record()
                fns[n](x)
                end.record()
                end.synchronize()
                times[n].append(start.elapsed_time(end) / 1e3)
    return times


def peak_memory(fn: Callable, x: torch.Tensor, precision: str) -> float:
    """Bytes allocated at the peak of one forward beyond what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.inference_mode(), precision_mode(precision):
        fn(x)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def gemm_rate(config, batch: int, dtype: torch.dtype, tf32: bool, reps: int) -> float:
    """TFLOP/s of ``torch.mm`` over the backbone's GEMM shapes (best time per shape, weighted by FLOPs)."""
    shapes = cpu_bench.gemm_shapes(config, batch)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    flops, seconds = 0.0, 0.0
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        for _, m, k, n, count in shapes:
            a = torch.randn(m, k, device="cuda", dtype=dtype)
            w = torch.randn(n, k, device="cuda", dtype=dtype)
            for _ in range(3):
                torch.mm(a, w.t())
            best = float("inf")
            for _ in range(reps):
                start.record()
                torch.mm(a, w.t())
                end.record()
                end.synchronize()
                best = min(best, start.elapsed_time(end) / 1e3)
            f = 2.0 * m * k * n * count
            flops += f
            seconds += best * count
            del a, w
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return flops / seconds / 1e12


# ------------------------------------------------------------------------------------------------- models
def stressed(model: torch.nn.Module) -> torch.nn.Module:
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name.endswith(".gamma"):
                p.fill_(STRESS_LAYER_SCALE)
    return out.eval()


def cls_features(fn: Callable, x: torch.Tensor, precision: str) -> torch.Tensor:
    with torch.inference_mode(), precision_mode(precision):
        return fn(x)["x_norm_clstoken"].float()


# -------------------------------------------------------------------------------------------------- pretrain
def pretrain_step(arch: str, batch: int, precision: str, steps: int, threads: int, timeout: int) -> tuple[str, str]:
    """Run benchmarks/pretrain.py; (its output, a one-line summary)."""
    cmd = [sys.executable, str(HERE / "pretrain.py"), "--arch", arch, "--batch", str(batch), "--precision", precision,
           "--steps", str(steps), "--threads", str(threads)]
    log(f"  $ {' '.join(cmd[1:])}")
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "", f"timed out after {timeout}s"
    wall = time.perf_counter() - started
    text = done.stdout + (done.stderr[-2000:] if done.returncode else "")
    if done.returncode:
        return text, f"FAILED (exit {done.returncode}) after {wall:.0f}s"
    m_step = re.search(r"^step \(compute\)\s+([\d.]+)", done.stdout, re.M)
    m_rate = re.search(r"pretraining: ([\d.]+) steps/s \(([\d.]+) images/s\) with data, ([\d.]+) steps/s without",
                       done.stdout)
    summary = (f"{float(m_step.group(1)):.3f} s/step compute, {m_rate.group(3)} steps/s without data, "
               f"{m_rate.group(1)} with data ({m_rate.group(2)} img/s); whole subprocess {wall:.0f}s"
               if m_step and m_rate else f"done in {wall:.0f}s (summary lines not found)")
    return text, summary


# ------------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards per path (default 3)")
    parser.add_argument("--reps", type=int, default=15, help="timed forwards per path (default 15)")
    parser.add_argument("--gemm-reps", type=int, default=10, help="timed torch.mm per shape (default 10)")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "cdetector_portion",
                        help="cell crops (train/*.png); default $CERVIXFM_SHARED/data/cdetector_portion")
    parser.add_argument("--skip-timm", action="store_true")
    parser.add_argument("--skip-pretrain", action="store_true")
    parser.add_argument("--pretrain-arch", default=PRESET, help=f"student arch for the step (default {PRESET})")
    parser.add_argument("--pretrain-batch", type=int, default=32)
    parser.add_argument("--pretrain-steps", type=int, default=3, help="timed steps (after one warm-up)")
    parser.add_argument("--pretrain-precisions", default="bf16,fp16")
    parser.add_argument("--pretrain-timeout", type=int, default=100, help="seconds per pretraining subprocess")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    if not torch.cuda.is_available():
        log(f"no CUDA: PyTorch {torch.__version__} sees no CUDA GPU here, so there is nothing to measure. "
            "Run this on a GPU machine (benchmarks/device_check.sh); for CPU numbers use benchmarks/backbone.py.")
        return 0

    b = args.batch_size
    config = get_preset(PRESET).config
    props = torch.cuda.get_device_properties(0)
    xf = xformers_available() and all(xformers_runs("cuda", d, config.embed_dim // config.num_heads)
                                      for d in (torch.float32, torch.bfloat16, torch.float16))
    xf_line = "xformers not importable: SDPA only"
    if xformers_available():
        import xformers

        xf_line = f"xformers {xformers.__version__}" + ("" if xf else " imports but cannot run here: SDPA only")
    log("CervixFM backbone GPU benchmark")
    log(f"  GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, capability {props.major}.{props.minor}; "
        f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}); {xf_line}")
    log(f"  model: preset {PRESET} (ViT-L/16, SwiGLU hidden {config.ffn_hidden}), random init; batch {b}, "
        f"{config.img_size} px; warm-up {args.warmup}, {args.reps} timed forwards per path")

    crops, crops_line = cpu_bench.load_crops(args.data, b)
    if crops is None or len(crops) < b:
        crops = torch.randn(b, 3, config.img_size, config.img_size)
        crops_line = f"random inputs ({crops_line or 'too few crops'}): stress cosines on noise, not cells"
    log(f"  data: {crops_line}")
    x = crops[:b].cuda()

    torch.manual_seed(0)
    with torch.device("cuda"):
        ours = build_vit(config).eval()
    ours_stress = stressed(ours)
    paths: dict[str, Callable] = {}
    stress_paths: dict[str, Callable] = {}
    for name, flag in (("ours xformers", True), ("ours sdpa", False)):
        if flag and not xf:
            continue
        paths[name] = with_kernel(ours, flag)
        stress_paths[name] = with_kernel(ours_stress, flag)

    timm_line = "skipped (--skip-timm)"
    twin = twin_stress = None
    if not args.skip_timm:
        timm, timm_line = cpu_bench.import_timm()
        if timm is not None:
            with torch.device("cuda"):
                twin = cpu_bench.build_timm_equivalent(ours)
                twin_stress = cpu_bench.build_timm_equivalent(ours_stress)
            paths["timm"] = with_kernel(twin, None)
            stress_paths["timm"] = with_kernel(twin_stress, None)
            with torch.inference_mode(), precision_mode("fp32"):
                Attention.use_xformers = False
                same = (ours_stress(x[:8]) - twin_stress(x[:8])).abs().max().item()
            timm_line += f"; same weights loaded strictly; fp32 max |ours - timm| on stress weights {same:.1e}"
    log(f"  timm: {timm_line}")

    flops_per_image = cpu_bench.backbone_flops(config, b)[0] / b
    log(f"  FLOPs per image: {flops_per_image / 1e9:.1f} GFLOP (GEMMs + attention, counted as backbone.py does)")

    ref = cls_features(stress_paths["ours sdpa"], x, "fp32")
    rows = []
    for precision, (tf32, _, mm_dtype) in PRECISIONS.items():
        log(f"\n[{precision}] timing {', '.join(paths)} ...")
        times = time_paths(paths, x, precision, args.warmup, args.reps)
        rate = gemm_rate(config, b, mm_dtype, tf32, args.gemm_reps)
        for name in paths:
            t = times[name]
            ips = b / statistics.median(t)
            cos = F.cosine_similarity(cls_features(stress_paths[name], x, precision), ref, dim=-1).min().item()
            mem = peak_memory(paths[name], x, precision)
            tflops = flops_per_image * ips / 1e12
            rows.append({"precision": precision, "path": name, "ips": ips, "lo": b / max(t), "hi": b / min(t),
                         "tflops": tflops, "gemm": rate, "frac": tflops / rate, "mem": mem, "cos": cos})
            log(f"  {name:14s} {ips:8.1f} images/s  {tflops:6.1f} TFLOP/s  cos {cos:.5f}  peak +{mem / 2**30:.2f} GiB")
        log(f"  torch.mm at the model's GEMM shapes ({str(mm_dtype).replace('torch.', '')}"
            f"{', TF32' if tf32 else ''}): {rate:.1f} TFLOP/s")
    Attention.use_xformers = True

    # ----------------------------------------------------------------------------------------------- table
    log(f"\nSUMMARY: {props.name}, batch {b}, {config.img_size} px, inference, random-init ViT-L/16 (SwiGLU)")
    head = (f"  {'precision':9s} {'path':14s} {'images/s':>9s} {'(min-max)':>15s} {'ours/timm':>9s} {'TFLOP/s':>8s} "
            f"{'mm TFLOP/s':>10s} {'of mm':>6s} {'peak GiB':>8s} {'CLS cos':>8s}")
    log(head)
    by_key = {(r["precision"], r["path"]): r for r in rows}
    for r in rows:
        timm_row = by_key.get((r["precision"], "timm"))
        ratio = f"{r['ips'] / timm_row['ips']:.3f}" if timm_row and r["path"] != "timm" else ""
        log(f"  {r['precision']:9s} {r['path']:14s} {r['ips']:9.1f} {r['lo']:7.1f}-{r['hi']:<7.1f} {ratio:>9s} "
            f"{r['tflops']:8.1f} {r['gemm']:10.1f} {r['frac']:6.3f} {r['mem'] / 2**30:8.2f} {r['cos']:8.5f}")
    log("  images/s: median (min-max) of the timed forwards; ours/timm at the same precision; 'of mm': achieved "
        "TFLOP/s over torch.mm's at the model's GEMM shapes and precision (bf16 is the headline); peak GiB: "
        "one forward's peak beyond what was allocated before it (weights resident); CLS cos: min over the crops "
        f"of the cosine to fp32 SDPA on stress weights (layer scale {STRESS_LAYER_SCALE})")

    del paths, stress_paths, ours, ours_stress, twin, twin_stress
    torch.cuda.empty_cache()  # the pretraining subprocess gets the whole GPU

    # ------------------------------------------------------------------------------------------- pretraining
    if not args.skip_pretrain:
        log(f"\n[pretraining] one DINOv2 step via benchmarks/pretrain.py: student {args.pretrain_arch}, batch "
            f"{args.pretrain_batch}, reference crops and heads")
        summaries = []
        for precision in [p.strip() for p in args.pretrain_precisions.split(",") if p.strip()]:
            text, summary = pretrain_step(args.pretrain_arch, args.pretrain_batch, precision, args.pretrain_steps,
                                          threads=min(8, os.cpu_count() or 1), timeout=args.pretrain_timeout)
            for line in text.rstrip().splitlines():
                log(f"    {line}")
            summaries.append((precision, summary))
        for precision, summary in summaries:
            log(f"  pretraining step {precision}: {summary}")
    log(f"\ntotal {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
