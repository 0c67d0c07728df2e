"""``cervixfm search``: the nearest entries of an index (slide library or atlas) to a crop or a slide position."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._retrieval_args import add_backbone_arguments


def register(sub) -> None:
    p = sub.add_parser(
        "search", help="find similar cells/tiles: query an index with an image crop or a slide position",
        description="Embed the query with the index's backbone and print its k nearest entries (published protocol: "
                    "key-mean centring, L2 normalisation, L2 distance). With --slide/--x/--y a crop of the index's "
                    "tile size is cut at the index's resolution, centred on the level-0 point (x, y).",
    )
    p.add_argument("--index", required=True, metavar="INDEX", help="index or atlas folder")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", metavar="CROP.png", help="query image (resized and centre-cropped to the model size)")
    query.add_argument("--slide", metavar="SLIDE", help="query slide; with --x and --y")
    p.add_argument("--x", type=float, help="level-0 x of the query's centre (with --slide)")
    p.add_argument("--y", type=float, help="level-0 y of the query's centre (with --slide)")
    p.add_argument("--mpp", type=float, help="µm/px of the query crop (default: the index's tile resolution)")
    p.add_argument("--slide-mpp", type=float, help="override the query slide's own µm/px (files without MPP)")
    p.add_argument("-k", "--k", type=int, default=20, help="neighbours to return (default 20)")
    p.add_argument("--only-slide", metavar="SLIDE", help="return hits from this slide of the library only")
    p.add_argument("--csv", metavar="OUT.csv", help="save the hits as CSV")
    p.add_argument("--json", metavar="OUT.json", help="save the query and hits as JSON")
    p.add_argument("--sheet", metavar="OUT.png", help="save a contact sheet: the query and thumbnails of the hits")
    p.add_argument("--sheet-size", type=int, default=128, help="thumbnail size in the contact sheet (px)")
    add_backbone_arguments(p, default_from_index=True)
    p.set_defaults(func=run)


def _query_image(args, index, size: int):
    """(RGB crop, description) of the query."""
    from core.errors import CervixFMError
    from core.images import read_rgb
    from core.models.bundle import DEFAULT_TARGET_MPP
    from core.retrieval.slides import query_crop

    if args.image:
        return read_rgb(args.image), {"image": str(args.image)}
    if args.x is None or args.y is None:
        raise CervixFMError("--slide needs --x and --y (level-0 pixel coordinates of the query's centre).")
    tile = index.tile or {}
    mpp = args.mpp or tile.get("mpp")
    note = ""
    if mpp is None:
        mpp = DEFAULT_TARGET_MPP
        note = f" (the index records no resolution; assumed {mpp} µm/px, set --mpp)"
    crop_size = int(tile.get("size") or size)
    crop = query_crop(args.slide, args.x, args.y, crop_size, mpp, args.slide_mpp)
    print(f"query: {crop_size} px crop at {mpp} µm/px centred on ({args.x:g}, {args.y:g}) of {args.slide}{note}",
          file=sys.stderr)
    return crop, {"slide": str(args.slide), "x": args.x, "y": args.y, "size": crop_size, "mpp": mpp}


def run(args: argparse.Namespace) -> int:
    from core.errors import CervixFMError
    from core.retrieval import CellIndex
    from core.retrieval.atlas import suggest_labels
    from core.retrieval.export import hits_csv, write_json

    from ._retrieval_args import make_embedder, print_hits

    if args.k < 1:
        raise CervixFMError("-k must be at least 1.")
    if args.slide is None and (args.x is not None or args.y is not None):
        raise CervixFMError("--x/--y need --slide.")
    for out in (args.csv, args.json, args.sheet):
        if out and not Path(out).resolve().parent.is_dir():
            raise CervixFMError(f"Output folder {Path(out).parent} does not exist.")
    index = CellIndex.open(args.index)
    if len(index) == 0:
        raise CervixFMError(f"Index {args.index} is empty.")
    embedder = make_embedder(args, index)
    image, query = _query_image(args, index, embedder.size)
    result = index.search_images([image], embedder, args.k, slide=args.only_slide)
    hits = result.records(0)
    payload = {"index": str(args.index), "query": query, "k": len(hits), "hits": hits}
    labels = index.label_counts()
    if labels and sum(labels.values()) == len(index):  # every entry labelled: an atlas can vote
        suggestion = suggest_labels(result)[0]
        payload["suggestion"] = {"label": suggestion.label, "confidence": suggestion.confidence,
                                 "votes": suggestion.votes}
        print(f"suggested label: {suggestion.label} (confidence {suggestion.confidence:.2f} of {len(hits)} votes)")
    print_hits(hits)
    if args.csv:
        hits_csv(args.csv, [hits], [query.get("image") or f"{query['slide']}@{query['x']:g},{query['y']:g}"])
    if args.json:
        write_json(args.json, payload)
    if args.sheet:
        from core.retrieval.contact_sheet import contact_sheet, save_png

        sheet = contact_sheet(hits, image, size=args.sheet_size, data_root=index.info.get("data_root"))
        save_png(args.sheet, sheet)
    return 0
