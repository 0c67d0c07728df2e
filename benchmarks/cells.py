"""Cell-stage throughput on a synthetic slide: cells found per second, and where the time goes.

1. Localisation alone: ``CellAnalysis`` without a model (reader threads read the cell-bearing tiles with their
   margins and run the classical detector; outlines and measurements are journalled and written out).
2. Localisation + embedding: the same with a ViT-S/16-sized backbone (random DINOv2 initialisation; speed does not
   depend on the weights) embedding a 224 x 224 crop per cell at 0.5 µm/px.
3. Backbone only: crops/s of the same backbone on pre-normalised tensors, the yardstick for (2).

Printed: cells/s of (1) and (2); for (2) the share of wall time spent outside the backbone, measured two ways:
from the stage's own timer around ``AnalysisModel.encode`` (includes normalising the crops), and as
``1 - cells / backbone-only rate / wall time`` (the time the backbone alone would need). Numbers on a shared
2-vCPU machine are noisy; compare ratios from one run, not absolute numbers across runs.

Usage: python benchmarks/cells.py [--side 8192] [--density 1.5] [--batch-size 32] [--workdir DIR]
"""

from __future__ import annotations

import argparse
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


def backbone_rate(model, batch_size: int, batches: int) -> float:
    import torch

    x = torch.randn(batch_size, 3, 224, 224)
    net = model.backbone.model
    with torch.inference_mode():
        net.forward_features(x)
        t0 = time.perf_counter()
        for _ in range(batches):
            net.forward_features(x)
    return batch_size * batches / (time.perf_counter() - t0)


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
    t0 = time.perf_counter()
    res = full.run(reuse=False)
    wall = time.perf_counter() - t0
    m = len(res)
    embed_s = full.timings["embed_s"]
    rate = backbone_rate(model, args.batch_size, max(2, min(8, m // args.batch_size)))
    print(f"localisation + embedding: {m} cells, {wall:.1f} s -> {m / wall:.1f} cells/s")
    print(f"backbone only (pre-normalised tensors): {rate:.1f} crops/s; ratio cells/s end-to-end / backbone only: "
          f"{m / wall / rate:.3f}")
    print(f"share of wall time outside the backbone: {1 - embed_s / wall:.3f} (stage timer around encode: "
          f"{embed_s:.1f} s of {wall:.1f} s); {1 - m / rate / wall:.3f} against the backbone-only rate")


if __name__ == "__main__":
    main()
