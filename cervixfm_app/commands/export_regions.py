"""``cervixfm export-regions SLIDE --annotations FILE.geojson --mpp 0.5 --out DIR``: crops of annotated regions.

Regions are the drawn annotations (polygons and rectangles) of the GeoJSON file, optionally only some classes,
or rectangles given with ``--rect``. Each crop comes with the objects of the file (and of ``--objects`` files,
e.g. an analysis's cells) that overlap it, as GeoJSON in crop pixels, and a CSV of their measurements.
"""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser(
        "export-regions",
        help="export annotated regions of a slide as image crops with their objects (GeoJSON) and a measurements CSV",
        description="Write a new folder under --out with, per region, an image crop at the chosen resolution and "
                    "the overlapping objects as QuPath GeoJSON in crop pixels, then measurements.csv and "
                    "manifest.json. Coordinates in the GeoJSON files are read as QuPath writes them (relative to "
                    "the OpenSlide bounds of the slide).",
    )
    p.add_argument("slide", metavar="SLIDE", help="slide file")
    p.add_argument("--annotations", metavar="FILE.geojson",
                   help="QuPath GeoJSON whose annotations are the regions (and whose objects are exported)")
    p.add_argument("--objects", metavar="FILE.geojson", action="append", default=[],
                   help="more objects to include in each region (repeatable), e.g. detected cells")
    p.add_argument("--rect", metavar="X,Y,W,H", action="append", default=[],
                   help="a level-0 rectangle to export instead of the file's annotations (repeatable)")
    p.add_argument("--class", dest="classes", metavar="NAME", action="append", default=None,
                   help="only regions of this class (repeatable)")
    res = p.add_mutually_exclusive_group()
    res.add_argument("--mpp", type=float, default=None, help="output resolution in µm/px (default: the scan's)")
    res.add_argument("--magnification", type=float, default=None, help="output magnification (40 = 0.25 µm/px)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder in which the export folder is created")
    p.add_argument("--name", default=None, help="name of the export folder (default: <slide>_export_<time>)")
    p.add_argument("--format", default="png", choices=["png", "jpg", "tif"], help="image format (default png)")
    p.add_argument("--burn", action="store_true", help="also write each crop with the objects drawn on it")
    p.add_argument("--no-bounds-offset", action="store_true",
                   help="the GeoJSON coordinates are level-0 pixels of the file, not QuPath's bounds-cropped frame")
    p.add_argument("--slide-mpp", type=float, default=None, metavar="UM",
                   help="microns per pixel of the slide when the file has none or a wrong value")
    p.add_argument("--json", action="store_true", help="print the manifest's regions as JSON")
    p.set_defaults(func=run)


def _rect(text: str) -> tuple[float, float, float, float]:
    from core.errors import InputError

    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise InputError(f"--rect {text!r}: expected four numbers X,Y,W,H (level-0 pixels).") from exc
    return x, y, w, h


def run(args: argparse.Namespace) -> int:
    from core.annotations import export_regions, read_geojson
    from core.errors import InputError
    from core.slides import open_slide

    if not args.annotations and not args.rect:
        raise InputError("Nothing to export: give --annotations FILE.geojson (its annotations are the regions) "
                         "or at least one --rect X,Y,W,H.")
    with open_slide(args.slide, mpp=args.slide_mpp) as slide:
        offset = None if args.no_bounds_offset else slide
        objects, warnings = [], []
        for path in ([args.annotations] if args.annotations else []) + args.objects:
            report = read_geojson(path, offset)
            objects += report.annotations
            warnings += [f"{path}: {w}" for w in report.warnings]
        if args.rect:
            regions = [_rect(r) for r in args.rect]
        else:
            regions = [a for a in objects if a.object_type == "annotation"
                       and a.geometry.geom_type in ("Polygon", "MultiPolygon")
                       and (args.classes is None or a.class_name in args.classes)]
            if not regions:
                which = f" of class {', '.join(args.classes)}" if args.classes else ""
                raise InputError(f"{args.annotations} has no polygon or rectangle annotations{which} to export; "
                                 "draw regions first or pass --rect.")
        result = export_regions(slide, regions, args.out, objects=objects, mpp=args.mpp,
                                magnification=args.magnification, name=args.name, image_format=args.format,
                                burn=args.burn)
    for w in warnings + result.warnings:
        print(f"warning: {w}")
    if args.json:
        print(json.dumps({"folder": str(result.folder), "regions": result.regions}, indent=1))
    else:
        print(f"exported {len(result.regions)} region(s) with {result.objects} object(s) to {result.folder}")
    return 0
