"""``cervixfm info SLIDE``: what a slide is (format, size, levels, MPP and where it came from) in plain words."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("info", help="describe a slide: format, size, pyramid levels, MPP, associated images")
    p.add_argument("slide", metavar="SLIDE", help="slide file (SVS, NDPI, MRXS, SCN, TIFF, DICOM, ...) or image")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--mpp", type=float, default=None, metavar="UM",
                   help="microns per pixel to use when the file has none or a wrong value")
    p.add_argument("--properties", action="store_true", help="also list every metadata property of the file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.slides import open_slide

    with open_slide(args.slide, mpp=args.mpp) as slide:
        meta = slide.metadata()
    if args.json:
        if not args.properties:
            meta.pop("properties", None)
        print(json.dumps(meta, indent=1))
        return 0
    print(format_metadata(meta, properties=args.properties))
    return 0


_SOURCES = {"file": "from the file", "user": "set by you (--mpp)", "fallback": "ASSUMED"}


def format_metadata(meta: dict, properties: bool = False) -> str:
    w, h = meta["width"], meta["height"]
    mx, my = meta["mpp_x"], meta["mpp_y"]
    lines = [
        f"slide       {meta['path']}",
        f"format      {meta['vendor']} (read with {meta['backend']})",
        f"size        {w:,} x {h:,} px = {w * mx / 1000:.2f} x {h * my / 1000:.2f} mm",
        f"resolution  {mx:.4f} x {my:.4f} µm/px ({_SOURCES.get(meta['mpp_source'], meta['mpp_source'])})",
    ]
    if meta["mpp_source"] == "fallback":
        lines.append(f"            warning: {meta['mpp_note'] or 'no MPP in the file'}; distances and areas "
                     "assume a 40x scan. Pass --mpp if you know the real value.")
    if meta["objective_power"]:
        lines.append(f"objective   {meta['objective_power']:g}x (from the file)")
    else:
        lines.append(f"objective   ~{meta['magnification']:.0f}x (estimated from MPP; the file does not say)")
    bx, by, bw, bh = meta["bounds"]
    if (bx, by, bw, bh) != (0, 0, w, h):
        lines.append(f"scanned     x={bx} y={by} {bw} x {bh} px (OpenSlide bounds; the rest is padding)")
    lines.append(f"levels      {len(meta['levels'])}")
    lines.append("   #      width     height  downsample    µm/px")
    for lv in meta["levels"]:
        lines.append(f"  {lv['level']:2d} {lv['width']:10,} {lv['height']:10,} {lv['downsample']:11.3f} "
                     f"{lv['mpp_x']:8.3f}")
    assoc = meta["associated_images"]
    if assoc:
        lines.append("associated  " + ", ".join(f"{k} {v[0]}x{v[1]}" for k, v in sorted(assoc.items())))
    else:
        lines.append("associated  none")
    if properties:
        lines.append("properties")
        for key, value in sorted(meta["properties"].items()):
            value = str(value).replace("\r", " ").replace("\n", " ")
            lines.append(f"  {key} = {value[:200]}")
    return "\n".join(lines)
