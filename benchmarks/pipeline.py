"""Analysis pipeline throughput and memory, measured in one run on synthetic slides.

1. Backbone only: tiles/s of a ViT-S/16-sized backbone (random weights) on pre-loaded, pre-normalised tensors, as
   many tiles as the slide has, in a child process.
2. End to end: ``SlideAnalysis`` on a synthetic slide (foreground detection, reading, resizing, normalising in reader
   threads, backbone, journal, feature file, result) in tiles/s, in a child process, and the ratio to (1).
   Target >= 0.9: reading and preprocessing hidden behind compute. (1) and (2) alternate for ``--rounds`` rounds so
   load from other work hits both alike; medians and the ratio of each round are printed, with the CPU time other
   processes took meanwhile.
3. Peak RSS of a whole analysis (each in a fresh child process) for a small slide and one with 10x the area.
   Target: within 1.5x of each other (memory bounded whatever the slide size).

On a GPU (``--device cuda``, e.g. ``--preset cervixfm-vitl16 --batch-size 64 --readers 2,8,14 --no-memory``) the
same comparison says whether the reader threads keep the GPU fed, and with how many.

Usage: python benchmarks/pipeline.py [--small 8192] [--batch-size 32] [--rounds 3] [--workdir DIR]
       [--device cpu|cuda] [--preset NAME] [--precision auto|fp32|bf16|fp16] [--readers 2[,8,...]] [--no-memory]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import CpuMonitor  # noqa: E402


def random_checkpoint(folder: Path, preset: str | None) -> Path:
    """Random weights: a ViT-S/16-sized backbone by default, else the named preset."""
    import torch

    from core.models import ViTConfig, build_vit, get_preset

    path = folder / f"{preset or 'vits16'}_random.pth"
    if not path.exists():
        torch.manual_seed(0)
        cfg = (get_preset(preset).config if preset else
               ViTConfig(embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224, ffn_layer="mlp"))
        torch.save(build_vit(cfg).state_dict(), path)
    return path


def make_slide(folder: Path, side: int, seed: int) -> Path:
    from core.synthetic import generate_slide

    path = folder / f"smear_{side}.tiff"
    if not path.exists():
        generate_slide(path, side, side, seed=seed, geojson=False)
    return path


def child_analysis(slide: str, checkpoint: str, out: str, batch_size: int, device: str = "cpu",
                   precision: str = "auto", readers: int = 2) -> None:
    """Run one analysis and print JSON with tiles, seconds and this process's peak RSS."""
    from core.pipeline.analysis_model import model_from_checkpoint
    from core.pipeline.analyze import SlideAnalysis

    model = model_from_checkpoint(checkpoint, device=device, precision=precision)
    analysis = SlideAnalysis(slide, model, out, batch_size=batch_size, readers=readers)
    t0 = time.perf_counter()
    result = analysis.run(reuse=False)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tiles": len(result.tiles), "seconds": seconds, "peak_rss_mb": rss,
                      "grid": result.summary["tiles_total_grid"]}))


def run_child(*args) -> dict:
    cmd = [sys.executable, __file__, "--child", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_backbone(checkpoint: str, tiles: int, batch_size: int, device: str = "cpu", precision: str = "auto"
                   ) -> None:
    """Backbone alone on ``tiles`` pre-loaded tiles in batches (the last one partial, as in the pipeline), on the
    device and at the precision the pipeline uses."""
    import torch

    from core.models import load_backbone
    from core.models.inference import select_device
    from core.pipeline.analysis_model import AUTOCAST_DTYPES, resolve_precision

    torch.manual_seed(0)
    dev = select_device(device)
    dtype = AUTOCAST_DTYPES.get(resolve_precision(precision, dev))
    model = load_backbone(checkpoint, device=dev).model.eval()
    x = torch.randn(batch_size, 3, 224, 224, device=dev)

    def forward(n: int) -> None:
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            model.forward_features(x[:n])["x_norm_clstoken"].float().cpu()  # the pipeline copies features back

    with torch.inference_mode():
        forward(2)  # warm-up, as the pipeline's first batch pays it too
        t0 = time.perf_counter()
        left = tiles
        while left > 0:
            forward(min(left, batch_size))
            left -= batch_size
        seconds = time.perf_counter() - t0
    print(json.dumps({"tiles": tiles, "seconds": seconds}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=8192, help="side of the small slide (the large one has 10x the area)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of backbone-only and end-to-end runs")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    ap.add_argument("--preset", default=None, help="backbone preset with random weights (default: ViT-S/16-sized)")
    ap.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on a CPU), fp32, bf16, fp16")
    ap.add_argument("--readers", default="2", help="tile-reading threads; a comma list runs each (e.g. 2,8,14)")
    ap.add_argument("--no-memory", action="store_true", help="skip the large-slide memory check")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "analysis":
            child_analysis(rest[0], rest[1], rest[2], int(rest[3]), rest[4], rest[5], int(rest[6]))
        else:
            child_backbone(rest[0], int(rest[1]), int(rest[2]), rest[3], rest[4])
        return
    import torch

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cervixfm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = random_checkpoint(work, args.preset)
    small = make_slide(work, args.small, seed=11)
    readers = [int(r) for r in str(args.readers).split(",")]
    print(f"machine: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; device {args.device}, "
          f"precision {args.precision}; backbone {args.preset or 'ViT-S/16 (384-d, 12 blocks)'}, batch "
          f"{args.batch_size}; slides in {work}", flush=True)

    monitor = CpuMonitor()
    bb_rates, small_runs = [], []
    e2e_rates: dict[int, list[float]] = {r: [] for r in readers}
    for r in range(args.rounds):
        line = []
        for n in readers:
            run = run_child("analysis", small, ckpt, work / f"out_small_{r}_{n}", args.batch_size, args.device,
                            args.precision, n)
            small_runs.append(run)
            e2e_rates[n].append(run["tiles"] / run["seconds"])
            line.append(f"end-to-end ({n} readers) {e2e_rates[n][-1]:.2f} tiles/s")
        bb = run_child("backbone", ckpt, small_runs[-1]["tiles"], args.batch_size, args.device, args.precision)
        bb_rates.append(bb["tiles"] / bb["seconds"])
        print(f"  round {r + 1}: {', '.join(line)}, backbone only {bb_rates[-1]:.2f} tiles/s, ratio "
              + ", ".join(f"{e2e_rates[n][-1] / bb_rates[-1]:.3f}" for n in readers), flush=True)
    load, _ = monitor.report()
    bb_rate = statistics.median(bb_rates)
    small_run = small_runs[0]
    print(f"backbone only (pre-loaded tensors): {bb_rate:8.2f} tiles/s (median of {args.rounds})")
    for n in readers:
        e2e_rate = statistics.median(e2e_rates[n])
        rounds = [e / b for e, b in zip(e2e_rates[n], bb_rates)]
        ratio = statistics.median(rounds)  # each round's pair ran back to back: the load changes less within a round
        print(f"end-to-end pipeline, {n} readers ({args.small}^2 slide, {small_run['tiles']} cell-area tiles of "
              f"{small_run['grid']}): {e2e_rate:8.2f} tiles/s (median of {args.rounds})")
        print(f"ratio end-to-end / backbone, {n} readers: {ratio:.3f} (median of the rounds' ratios; rounds "
              f"{min(rounds):.3f}-{max(rounds):.3f}; ratio of the medians {e2e_rate / bb_rate:.3f})  "
              f"(target >= 0.9: {'PASS' if ratio >= 0.9 else 'MISS'})")
    print(f"during the rounds {load}")
    if args.no_memory:
        return
    large_side = int(round(args.small * math.sqrt(10) / 512)) * 512
    large = make_slide(work, large_side, seed=12)
    large_run = run_child("analysis", large, ckpt, work / "out_large", args.batch_size, args.device, args.precision,
                          readers[0])
    small_rss = max(run["peak_rss_mb"] for run in small_runs)
    mem_ratio = large_run["peak_rss_mb"] / small_rss
    print(f"peak RSS small slide ({args.small}^2, {small_run['tiles']} tiles): {small_rss:.0f} MB")
    print(f"peak RSS large slide ({large_side}^2, {large_run['tiles']} tiles, "
          f"{large_run['tiles'] / large_run['seconds']:.1f} tiles/s): {large_run['peak_rss_mb']:.0f} MB")
    print(f"peak RSS ratio large / small: {mem_ratio:.2f}  (target <= 1.5: {'PASS' if mem_ratio <= 1.5 else 'MISS'})")


if __name__ == "__main__":
    main()
