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

Usage: python benchmarks/pipeline.py [--small 8192] [--batch-size 32] [--rounds 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
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


def vits16_checkpoint(folder: Path) -> Path:
    import torch

    from core.models import ViTConfig, build_vit

    path = folder / "vits16_random.pth"
    if not path.exists():
        torch.manual_seed(0)
        cfg = ViTConfig(embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224, ffn_layer="mlp")
        torch.save(build_vit(cfg).state_dict(), path)
    return path


def make_slide(folder: Path, side: int, seed: int) -> Path:
    from core.synthetic import generate_slide

    path = folder / f"smear_{side}.tiff"
    if not path.exists():
        generate_slide(path, side, side, seed=seed, geojson=False)
    return path


def child_analysis(slide: str, checkpoint: str, out: str, batch_size: int) -> None:
    """Run one analysis and print JSON with tiles, seconds and this process's peak RSS."""
    from core.pipeline.analysis_model import model_from_checkpoint
    from core.pipeline.analyze import SlideAnalysis

    model = model_from_checkpoint(checkpoint, device="cpu")
    analysis = SlideAnalysis(slide, model, out, batch_size=batch_size)
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


def child_backbone(checkpoint: str, tiles: int, batch_size: int) -> None:
    """Backbone alone on ``tiles`` pre-loaded tiles in batches (the last one partial, as in the pipeline)."""
    import torch

    from core.models import load_backbone

    torch.manual_seed(0)
    model = load_backbone(checkpoint).model.eval()
    x = torch.randn(batch_size, 3, 224, 224)
    with torch.inference_mode():
        model.forward_features(x[:2])  # warm-up, as the pipeline's first batch pays it too
        t0 = time.perf_counter()
        left = tiles
        while left > 0:
            model.forward_features(x[:min(left, batch_size)])
            left -= batch_size
        seconds = time.perf_counter() - t0
    print(json.dumps({"tiles": tiles, "seconds": seconds}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=8192, help="side of the small slide (the large one has 10x the area)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of backbone-only and end-to-end runs")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.child[0] == "analysis":
            child_analysis(args.child[1], args.child[2], args.child[3], int(args.child[4]))
        else:
            child_backbone(args.child[1], int(args.child[2]), int(args.child[3]))
        return
    import torch

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cervixfm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = vits16_checkpoint(work)
    small = make_slide(work, args.small, seed=11)
    large_side = int(round(args.small * math.sqrt(10) / 512)) * 512
    large = make_slide(work, large_side, seed=12)
    print(f"machine: {torch.get_num_threads()} torch threads; backbone ViT-S/16 (384-d, 12 blocks), "
          f"batch {args.batch_size}; slides in {work}", flush=True)

    monitor = CpuMonitor()
    bb_rates, e2e_rates, small_runs = [], [], []
    for r in range(args.rounds):
        run = run_child("analysis", small, ckpt, work / f"out_small_{r}", args.batch_size)
        small_runs.append(run)
        e2e_rates.append(run["tiles"] / run["seconds"])
        bb = run_child("backbone", ckpt, run["tiles"], args.batch_size)
        bb_rates.append(bb["tiles"] / bb["seconds"])
        print(f"  round {r + 1}: end-to-end {e2e_rates[-1]:.2f} tiles/s, backbone only {bb_rates[-1]:.2f} tiles/s, "
              f"ratio {e2e_rates[-1] / bb_rates[-1]:.3f}", flush=True)
    load, _ = monitor.report()
    large_run = run_child("analysis", large, ckpt, work / "out_large", args.batch_size)
    bb_rate, e2e_rate = statistics.median(bb_rates), statistics.median(e2e_rates)
    rounds = [e / b for e, b in zip(e2e_rates, bb_rates)]
    ratio = statistics.median(rounds)  # each round's pair ran back to back: the load changes less within a round
    small_run = small_runs[0]
    small_rss = max(run["peak_rss_mb"] for run in small_runs)
    mem_ratio = large_run["peak_rss_mb"] / small_rss
    print(f"backbone only (pre-loaded tensors): {bb_rate:8.2f} tiles/s (median of {args.rounds})")
    print(f"end-to-end pipeline ({args.small}^2 slide, {small_run['tiles']} cell-area tiles of {small_run['grid']}): "
          f"{e2e_rate:8.2f} tiles/s (median of {args.rounds})")
    print(f"ratio end-to-end / backbone: {ratio:.3f} (median of the rounds' ratios; rounds "
          f"{min(rounds):.3f}-{max(rounds):.3f}; ratio of the medians {e2e_rate / bb_rate:.3f})  "
          f"(target >= 0.9: {'PASS' if ratio >= 0.9 else 'MISS'})")
    print(f"during the rounds {load}")
    print(f"peak RSS small slide ({args.small}^2, {small_run['tiles']} tiles): {small_rss:.0f} MB")
    print(f"peak RSS large slide ({large_side}^2, {large_run['tiles']} tiles, "
          f"{large_run['tiles'] / large_run['seconds']:.1f} tiles/s): {large_run['peak_rss_mb']:.0f} MB")
    print(f"peak RSS ratio large / small: {mem_ratio:.2f}  (target <= 1.5: {'PASS' if mem_ratio <= 1.5 else 'MISS'})")


if __name__ == "__main__":
    main()
