"""``cervixfm index build|info|remove|rebuild|verify``: slide libraries of analysed slides for similar-cell search."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "index", help="cell/tile indexes of analysed slides: build, inspect, remove a slide, rebuild, verify",
        description="A slide library index holds the tile embeddings of analysed slides (`cervixfm analyze`) with "
                    "their slide and level-0 box, for `cervixfm search`. Exact search below 50,000 entries, an "
                    "approximate (IVF-PQ, re-ranked) index above.",
    )
    actions = p.add_subparsers(dest="index_command", metavar="ACTION")
    actions.required = True

    b = actions.add_parser("build", help="index the tiles of analysed slides")
    b.add_argument("--results", required=True, nargs="+", metavar="DIR",
                   help="result folders of `cervixfm analyze`, or its --out folders (one sub-folder per slide)")
    b.add_argument("--out", required=True, metavar="INDEX", help="index folder")
    mode = b.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add to the index at --out (slides in it are replaced)")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing index at --out")
    b.add_argument("--cells", action="store_true",
                   help="index the cells of `cervixfm analyze --cells` instead of the tiles")
    b.add_argument("--float16", action="store_true",
                   help="store embeddings as float16: half the disk and page cache; measured recall@10 0.999 of "
                        "float32 exact search")
    b.set_defaults(func=_build)

    i = actions.add_parser("info", help="what an index or atlas holds")
    i.add_argument("index", metavar="INDEX")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=_info)

    r = actions.add_parser("remove", help="remove every entry of a slide")
    r.add_argument("index", metavar="INDEX")
    r.add_argument("--slide", required=True, nargs="+", metavar="SLIDE", help="slide path, file name or stem")
    r.set_defaults(func=_remove)

    rb = actions.add_parser("rebuild", help="retrain the approximate index on the current entries")
    rb.add_argument("index", metavar="INDEX")
    rb.set_defaults(func=_rebuild)

    v = actions.add_parser("verify", help="check every file of an index against its checksum")
    v.add_argument("index", metavar="INDEX")
    v.set_defaults(func=_verify)


def _build(args: argparse.Namespace) -> int:
    from core.retrieval.slides import build_slide_index

    what = "cells" if args.cells else "tiles"

    def progress(folder, n):
        print(f"{folder.name}: {n} {what}", file=sys.stderr)

    index = build_slide_index(args.results, args.out, dtype="float16" if args.float16 else "float32",
                              overwrite=args.overwrite, append=args.append, what=what, progress=progress)
    print(f"index {args.out}: {len(index):,} entries from {len(index.slides())} slide(s), {index.mode} search")
    return 0


def _info(args: argparse.Namespace) -> int:
    from core.retrieval import CellIndex
    from core.retrieval.identity import describe

    summary = CellIndex.open(args.index).summary()
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"index       {summary['folder']} ({summary['kind']})")
    print(f"entries     {summary['entries']:,} x {summary['dim']}-d {summary['dtype']}, {summary['mode']} search "
          f"(exact below {summary['exact_limit']:,})")
    print(f"backbone    {describe(summary['backbone'])}")
    if summary["tile"]:
        print(f"tiles       {summary['tile']['size']} px at {summary['tile']['mpp']} µm/px")
    if summary["slides"]:
        print(f"slides      {summary['slides']}")
    if summary["classes"]:
        print("classes     " + ", ".join(f"{c} ({summary['labels'].get(c, 0)})" for c in summary["classes"]))
    ann = summary["approximate_index"]
    if ann:
        recall = f", measured recall@10 {ann['measured_recall']:.3f}" if ann.get("measured_recall") is not None else ""
        print(f"approximate IVF{ann['nlist']},PQ{ann['pq_m']}x4fs, nprobe {ann['nprobe']}, "
              f"{ann['candidates']} candidates re-ranked{recall}")
    print(f"updated     {summary['updated']}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from core.retrieval import CellIndex

    index = CellIndex.open(args.index)
    for slide in args.slide:
        n = index.remove_slide(slide)
        print(f"removed {n:,} entries of {slide}")
    index.save()
    print(f"index {args.index}: {len(index):,} entries left")
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from core.retrieval import CellIndex

    index = CellIndex.open(args.index)
    index.rebuild()
    index.save()
    print(f"index {args.index}: rebuilt, {len(index):,} entries, {index.mode} search")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from core.retrieval import CellIndex

    index = CellIndex.open(args.index, verify=True)
    print(f"index {args.index}: all files intact ({len(index):,} entries)")
    return 0
