"""``cervixfm demo-slide OUT.tiff``: write a synthetic Pap smear (pyramidal TIFF) and its ground-truth GeoJSON."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "demo-slide",
        help="write a synthetic Pap-smear slide with every cell as ground truth (QuPath GeoJSON)",
        description="Write a synthetic Pap smear as a real pyramidal, tiled, JPEG TIFF (OpenSlide reads it) and "
                    "OUT.geojson with every cell (outline, nucleus, class). A name ending in .svs writes an "
                    "Aperio-style file with label, macro and thumbnail images. The same seed gives the same slide.",
    )
    p.add_argument("out", metavar="OUT.tiff", help="output slide (.tiff/.tif: generic tiled TIFF, .svs: Aperio)")
    p.add_argument("--width", type=int, default=16384, help="level-0 width in pixels (default 16384)")
    p.add_argument("--height", type=int, default=16384, help="level-0 height in pixels (default 16384)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--abnormal-fraction", type=float, default=0.05, metavar="F",
                   help="expected share of epithelial cells that are LSIL or HSIL (default 0.05)")
    p.add_argument("--mpp", type=float, default=0.25, help="microns per pixel at level 0 (default 0.25, i.e. 40x)")
    p.add_argument("--cellularity", type=float, default=None, metavar="F",
                   help="share of the preparation area that carries cells (default: random 0.25-0.6 per seed)")
    p.add_argument("--density", type=float, default=1.0, help="scale of cells per mm^2 where there are cells")
    p.add_argument("--tile", type=int, default=512, help="TIFF tile size in pixels (default 512)")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality 1-100 (default 85)")
    p.add_argument("--workers", type=int, default=None, help="drawing threads (default: number of CPUs, max 8)")
    p.add_argument("--no-geojson", action="store_true", help="do not write the ground-truth GeoJSON")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.errors import CervixFMError
    from core.synthetic import generate_slide

    if args.width <= 0 or args.height <= 0:
        raise CervixFMError(f"--width and --height must be positive, got {args.width} x {args.height}")
    if not 1 <= args.quality <= 100:
        raise CervixFMError(f"--quality must be within 1..100, got {args.quality}")
    if args.density <= 0:
        raise CervixFMError(f"--density must be positive, got {args.density}")
    bar = None
    progress = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=0, unit="tile", desc="demo-slide", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

    try:
        result = generate_slide(
            args.out, args.width, args.height, seed=args.seed, abnormal_fraction=args.abnormal_fraction,
            mpp=args.mpp, cellularity=args.cellularity, density=args.density, tile=args.tile,
            quality=args.quality, geojson=not args.no_geojson, workers=args.workers, progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    counts = ", ".join(f"{name} {n}" for name, n in result.class_counts.items() if n)
    print(f"wrote {result.path}: {result.width} x {result.height} px at {result.mpp} µm/px, "
          f"{len(result.levels)} levels, {result.tiles} tiles in {result.seconds:.1f} s "
          f"({result.megapixels_per_second:.0f} Mpx/s)")
    print(f"cells {result.cells}: {counts or 'none'}; abnormal share of epithelial cells "
          f"{result.abnormal_fraction:.3f}")
    if result.geojson:
        print(f"ground truth {result.geojson}")
    return 0
