"""Options and helpers shared by ``cervixfm atlas``, ``cervixfm index`` and ``cervixfm search``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from ._model_args import SIZE_HELP


def add_backbone_arguments(parser: argparse.ArgumentParser, default_from_index: bool = False) -> None:
    g = parser.add_argument_group("model")
    extra = " (default: the checkpoint the index was built with, if it is still there)" if default_from_index else ""
    g.add_argument("--checkpoint", "--pretrained_path", "--pretrained-path", dest="checkpoint", metavar="PATH",
                   help="backbone weights (.pth/.pt/.safetensors, any supported layout)" + extra)
    g.add_argument("--bundle", metavar="DIR", help="model bundle folder instead of --checkpoint")
    g.add_argument("--config", metavar="YAML", help="architecture config overriding what the weights imply")
    g.add_argument("--preset", metavar="NAME", help="named architecture, e.g. cervixfm-vitl16")
    g.add_argument("--non-strict", action="store_true", help="load what fits instead of refusing a mismatching checkpoint")
    g.add_argument("--size", metavar="PX|trained", help=SIZE_HELP + "; with --checkpoint (for an index: the size it "
                                                          "was built at)")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    g.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    g.add_argument("--workers", type=int, default=2, help="image-decoding threads")


def make_embedder(args, index=None):
    """The embedder the user asked for; by default, for an index, the checkpoint it was built with."""
    from core.errors import CervixFMError
    from core.models import load_backbone
    from core.models.inference import select_device
    from core.models.loader import input_size_note
    from core.paths import resolve_checkpoint
    from core.retrieval.embedder import ImageEmbedder
    from core.retrieval.identity import check_same_backbone

    if args.batch_size < 1:
        raise CervixFMError("--batch-size must be at least 1.")
    if args.bundle:
        if args.checkpoint:
            raise CervixFMError("Give either --bundle or --checkpoint, not both.")
        if args.size:
            raise CervixFMError("--size goes with --checkpoint; a bundle brings its own preprocessing.")
        from core.pipeline.analysis_model import model_from_bundle

        embedder = ImageEmbedder.from_analysis_model(model_from_bundle(args.bundle, device=args.device),
                                                     args.batch_size)
        what = f"bundle {args.bundle}"
    else:
        path = args.checkpoint
        recorded = (index.backbone or {}).get("checkpoint") if index is not None else None
        if not path and recorded and Path(recorded).is_file():
            path = recorded
        path = resolve_checkpoint(path)
        device = select_device(args.device)
        size = args.size or ((index.backbone or {}).get("input_size") if index is not None else None) or 224
        loaded = load_backbone(path, config=args.config, preset=args.preset, strict=not args.non_strict, device=device,
                               input_size=size)
        note = input_size_note(loaded)
        if note:
            print(f"note: {note}", file=sys.stderr)
        embedder = ImageEmbedder.from_backbone(loaded, device, args.batch_size)
        what = f"checkpoint {path}"
    if index is not None:
        check_same_backbone(index.backbone, embedder.identity, index.name, f"the query ({what})")
    return embedder


def print_hits(records: Sequence[dict[str, Any]], out=None) -> None:
    out = out or sys.stdout
    print(f"{'rank':>4}  {'distance':>8}  {'cosine':>6}  {'source':<6}  {'label':<12}  {'score':>5}  where", file=out)
    for r in records:
        if r.get("slide"):
            where = f"{r['slide']} x={r['x']} y={r['y']} w={r['w']} h={r['h']}"
        else:
            where = r.get("name") or ""
        score = f"{r['score']:.2f}" if r.get("score") is not None else ""
        print(f"{r['rank']:>4}  {r['distance']:>8.4f}  {r['similarity']:>6.3f}  {r['source']:<6}  "
              f"{(r.get('label') or '-'):<12}  {score:>5}  {where}", file=out)
