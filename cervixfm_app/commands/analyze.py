"""``cervixfm analyze``: slide(s) -> tile features, head outputs and a result object per slide."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._model_args import add_model_arguments

SLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".tif", ".tiff", ".vms", ".vmu", ".bif", ".svslide", ".dcm",
                  ".png", ".jpg", ".jpeg", ".bmp"}


def register(sub) -> None:
    p = sub.add_parser(
        "analyze", help="analyse a slide or a folder of slides (features, tile/slide heads, results)",
        description="Tile the cell-bearing area of each slide at the model's MPP, embed every tile with the backbone, "
                    "run the bundle's heads and write OUT/<slide>/{features.h5,tiles.npz,result.json}. Interrupted "
                    "runs resume; slides already analysed with the same model are skipped.",
    )
    p.add_argument("slide", metavar="SLIDE_OR_FOLDER")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--bundle", metavar="DIR", help="model bundle folder (bundle.json)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (one subfolder per slide)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--readers", type=int, default=None,
                   help="tile-reading threads (default: 2 on a CPU, up to 8 on a GPU)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="backbone precision: auto = bf16 autocast on CUDA, fp32 on a CPU")
    p.add_argument("--target-mpp", type=float, default=None, help="tile resolution in µm/px (checkpoint mode; default 0.5)")
    p.add_argument("--slide-mpp", type=float, default=None, help="override the slide's own µm/px (files without MPP)")
    p.add_argument("--no-foreground", action="store_true", help="analyse every tile, not only the cell-bearing area")
    p.add_argument("--overwrite", action="store_true", help="recompute even when a complete result exists")
    cells = p.add_argument_group("cells")
    cells.add_argument("--cells", action="store_true",
                       help="also find every cell, embed a crop centred on it, classify it with the bundle's "
                            "cell-classifier heads and rank it (cells.h5, cells.geojson, cells.csv, cells_ranked.csv, "
                            "cell_index/)")
    cells.add_argument("--normal-classes", metavar="A,B",
                       help="cell classes that count as normal for the abnormality score (default: the head's own "
                            "list, else Bethesda NILM and the normal cell types)")
    cells.add_argument("--cell-threshold", type=float, default=0.5,
                       help="probability from which a cell counts in the slide's cell summary (default 0.5)")
    add_model_arguments(p)
    p.set_defaults(func=run)


def _slides(target: Path) -> list[Path]:
    from core.errors import InputError

    if target.is_dir():
        found = sorted(p for p in target.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES
                       and not p.name.startswith("."))
        if not found:
            raise InputError(f"No slides ({', '.join(sorted(SLIDE_SUFFIXES))}) in folder {target}.")
        return found
    if not target.exists():
        raise InputError(f"Slide {target} does not exist.")
    return [target]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.errors import CervixFMError
    from core.models.bundle import DEFAULT_TARGET_MPP
    from core.paths import resolve_checkpoint
    from core.pipeline.analysis_model import model_from_bundle, model_from_checkpoint
    from core.pipeline.analyze import SlideAnalysis, default_readers

    slides = _slides(Path(args.slide))
    if args.readers is not None and args.readers < 1:
        raise CervixFMError(f"--readers must be at least 1 (got {args.readers}).")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CervixFMError(f"Cannot create output folder {out}: {exc.strerror}.") from exc
    if args.bundle:
        model = model_from_bundle(args.bundle, device=args.device, precision=args.precision)
    else:
        model = model_from_checkpoint(resolve_checkpoint(args.checkpoint), config=args.config, preset=args.preset,
                                      device=args.device, target_mpp=args.target_mpp or DEFAULT_TARGET_MPP,
                                      precision=args.precision)
    readers = args.readers or default_readers(model.device)
    print(f"model: {model.name} ({model.backbone.summary()}), tiles {model.tile_size}px at {model.target_mpp} µm/px "
          f"on {model.device} ({model.precision}), {readers} tile readers", file=sys.stderr)
    cell_options = None
    if args.cells:
        from core.cells import CellOptions

        normal = tuple(c.strip() for c in args.normal_classes.split(",") if c.strip()) if args.normal_classes else None
        cell_options = CellOptions(batch_size=args.batch_size, readers=readers, threshold=args.cell_threshold,
                                   normal_classes=normal)
    failures: list[tuple[Path, str]] = []
    for path in slides:
        try:
            analysis = SlideAnalysis(path, model, out, batch_size=args.batch_size, readers=readers,
                                     mpp=args.slide_mpp, use_foreground=not args.no_foreground, cells=cell_options)
            if not args.overwrite and not args.cells and analysis.existing_result() is not None:
                print(f"{path.name}: already analysed with this model -> {analysis.folder}", file=sys.stderr)
                continue
            if analysis.slide.mpp_source == "fallback":
                print(f"{path.name}: warning: {analysis.slide.mpp_note}; assuming {analysis.slide.mpp[0]} µm/px "
                      "(set --slide-mpp)", file=sys.stderr)
            with tqdm(total=len(analysis.grid), unit="tile", desc=path.name, disable=None, file=sys.stderr) as bar, \
                    tqdm(unit="cell", desc=f"{path.name} cells", disable=None if args.cells else True,
                         file=sys.stderr) as cell_bar:
                def on_progress(p, bar=bar):
                    bar.n = p.done
                    bar.refresh()

                def on_cells(p, bar=cell_bar):
                    bar.n = p.cells
                    bar.set_postfix_str(f"tile {p.tiles_done}/{p.tiles_total}")

                result = analysis.run(on_progress, reuse=not args.overwrite, cell_progress=on_cells)
            _print_summary(path, result)
        except CervixFMError as exc:
            if len(slides) == 1:
                raise
            failures.append((path, str(exc)))
            print(f"{path.name}: error: {exc}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(slides)} slides failed: {', '.join(p.name for p, _ in failures)}", file=sys.stderr)
        return 1
    return 0


def _print_summary(path: Path, result) -> None:
    s = result.summary
    area = s.get("cell_area_fraction")
    lines = [f"{path.name}: {result.status}: {s['tiles_analysed']} tiles analysed of {s['tiles_total_grid']} "
             f"({s['tiles_cell_area']} in the cell-bearing area"
             + (f", {100 * area:.1f}% of the slide carries cells" if area is not None else "") + f") in {s['seconds']} s"]
    if s.get("tiles_skipped"):
        lines.append(f"  {s['tiles_skipped']} unreadable tiles skipped (listed in result.json)")
    for name, score in result.slide_scores.items():
        probs = ", ".join(f"{c} {p:.3f}" for c, p in zip(score["classes"], score["probs"]))
        lines.append(f"  slide head {name}: {score['label']} ({probs})")
    for key, counts in s.items():
        if key.endswith(".tile_counts"):
            lines.append(f"  {key[:-12]} tiles per class: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    lines += _cell_lines(result.cells)
    lines.append(f"  -> {result.folder}")
    print("\n".join(lines))


def _cell_lines(cells: dict) -> list[str]:
    if not cells:
        return []
    lines = [f"  cells: {cells['count']} found ({cells['status']}) in {cells['tiles_total']} localisation tiles"]
    for name, s in (cells.get("slide_summary") or {}).items():
        above = ", ".join(f"{c} {n}" for c, n in s["cells_per_class_above_threshold"].items())
        lines.append(f"  cell head {name}: cells with p >= {s['threshold']:g}: {above}")
        top = next(k for k in s if k.startswith("top") and k.endswith("_mean_abnormality"))
        lines.append(f"    abnormal cells (abnormality >= {s['threshold']:g}): {s['abnormal_cells_above_threshold']}; "
                     f"{top.split('_')[0]} mean abnormality {s[top]:.3f}; leading abnormal class "
                     f"{s['leading_abnormal_class']}")
        ranked = (cells.get("ranked") or {}).get(name, {}).get("abnormality", [])[:3]
        if ranked:
            lines.append("    most abnormal: " + "; ".join(f"({c['x']:.0f}, {c['y']:.0f}) {c['score']:.3f}"
                                                         for c in ranked))
    return lines
