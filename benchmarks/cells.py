"""Cell-stage throughput on a synthetic slide: cells found per second, and where the time goes.

1. Localisation alone: ``CellAnalysis`` without a model (reader threads read the cell-bearing tiles with their
   margins and run the classical detector; outlines and measurements are journalled and written out).
2. Localisation + embedding: the same with a ViT-S/16-sized backbone (random DINOv2 initialisation; speed does not
   depend on the weights) embedding a 224 x 224 crop per cell at 0.5 µm/px.
3. Backbone only: crops/s of the same backbone on pre-normalised tensors, the yardstick for (2).

Printed: cells/s of (1) and (2); for (2) the share of the time spent outside the backbone: of the process's CPU
time (``1 - cells x backbone CPU s per crop / CPU s of the run``: robust to other jobs on a shared machine), of the
wall time (``1 - cells / backbone-only rate / wall``; the backbone-only rate is measured just before and just after
the run and averaged), and the stage's own timer around ``AnalysisModel.encode`` (which also counts the time
reader threads take the CPU from the backbone). On a CPU-only machine localisation and the backbone share the same
cores, so their times add; with a GPU the backbone's share shrinks and localisation (reader threads) sets the pace.

Usage: python benchmarks/cells.py [--side 8192] [--density 1.5] [--batch-size 32] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def vits16_checkpoint(folder: Path) -> Path:
    import torch

    from core.models import ViTConfig, build_vit

    path = folder / "vits16_random.pth"
    if not path.exists():
        torch.manual_seed(0)
        cfg = ViTConfig(embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224, ffn_layer="mlp")
        torch.save(build_vit(cfg).state_dict(), path)
    return path


def cpu_seconds() -> float:
    """CPU time of this process, all threads: what the work costs, whatever else the machine is running."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def backbone_rate(model, batch_size: int, batches: int) -> tuple[float, float]:
    """(crops per wall second, CPU seconds per crop) of the backbone alone on pre-normalised tensors."""
    import torch

    x = torch.randn(batch_size, 3, 224, 224)
    net = model.backbone.model
    with torch.inference_mode():
        net.forward_features(x)
        t0, c0 = time.perf_counter(), cpu_seconds()
        for _ in range(batches):
            net.forward_features(x)
    n = batch_size * batches
    return n / (time.perf_counter() - t0), (cpu_seconds() - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=8192, help="slide side in level-0 px (0.25 µm/px)")
    ap.add_argument("--density", type=float, default=1.5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from core.cells import CellAnalysis, CellOptions
    from core.pipeline.analysis_model import model_from_checkpoint
    from core.synthetic import generate_slide

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cervixfm-cells-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    slide = work / f"smear_{args.side}.tiff"
    if not slide.exists():
        generate_slide(slide, args.side, args.side, seed=31, density=args.density, abnormal_fraction=0.2,
                       geojson=False)
    model = model_from_checkpoint(vits16_checkpoint(work), device="cpu")
    opts = CellOptions(batch_size=args.batch_size, readers=args.readers, exports=True, index=False)
    print(f"machine: {torch.get_num_threads()} torch threads; slide {args.side}^2 px at 0.25 µm/px; backbone "
          f"ViT-S/16 (384-d, 12 blocks), batch {args.batch_size}, {args.readers} reader threads; {work}")

    loc = CellAnalysis(slide, work / "localise", None, options=opts)
    t0 = time.perf_counter()
    only = loc.run(reuse=False)
    loc_wall = time.perf_counter() - t0
    n = len(only)
    print(f"localisation alone: {n} cells in {len(loc.tiles)} tiles, {loc_wall:.1f} s -> {n / loc_wall:.1f} cells/s "
          f"(reading {loc.timings['read_s']:.1f} s, detecting {loc.timings['detect_s']:.1f} s summed over threads)")

    full = CellAnalysis(slide, work / "embed", model, options=opts)
    batches = max(2, min(6, n // args.batch_size))
    rate_before, cpu_per_crop_before = backbone_rate(model, args.batch_size, batches)
    t0, c0 = time.perf_counter(), cpu_seconds()
    res = full.run(reuse=False)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    rate_after, cpu_per_crop_after = backbone_rate(model, args.batch_size, batches)
    m = len(res)
    rate = (rate_before + rate_after) / 2
    cpu_per_crop = (cpu_per_crop_before + cpu_per_crop_after) / 2
    embed_s = full.timings["embed_s"]
    print(f"localisation + embedding: {m} cells, {wall:.1f} s -> {m / wall:.1f} cells/s ({cpu:.1f} CPU s)")
    print(f"backbone only (pre-normalised tensors): {rate:.1f} crops/s (before {rate_before:.1f}, after "
          f"{rate_after:.1f}), {cpu_per_crop:.3f} CPU s per crop; ratio cells/s end-to-end / backbone only: "
          f"{m / wall / rate:.3f}")
    print(f"share of the time outside the backbone: {1 - m * cpu_per_crop / cpu:.3f} of the CPU time (the backbone "
          f"alone would need {m * cpu_per_crop:.1f} of {cpu:.1f} CPU s); {1 - m / rate / wall:.3f} of the wall time; "
          f"the stage's own timer around encode: {embed_s:.1f} of {wall:.1f} s")


if __name__ == "__main__":
    main()
