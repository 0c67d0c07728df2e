"""Command-line options shared by every command that loads a backbone."""

from __future__ import annotations

import argparse


SIZE_HELP = ("input size in pixels (a multiple of the patch size), or 'trained' for the size the backbone was "
             "trained at (e.g. 112 for a small_data pretraining run); default 224, the published protocol")


def add_model_arguments(parser: argparse.ArgumentParser, checkpoint_required: bool = False,
                        input_size: bool = False) -> None:
    group = parser.add_argument_group("model")
    if input_size:
        group.add_argument("--size", default="224", metavar="PX|trained", help=SIZE_HELP)
    group.add_argument("--checkpoint", required=checkpoint_required, metavar="PATH",
                       help="backbone weights (.pth/.pt/.safetensors) in any supported layout; default: "
                            "$CERVIXFM_CHECKPOINT or ~/.local/share/cervixfm/models/CervixFM.pth")
    group.add_argument("--config", metavar="YAML", help="architecture config (DINOv2 YAML with a student: block, or "
                                                        "JSON/YAML constructor arguments); overrides what the weights imply")
    group.add_argument("--preset", metavar="NAME", help="named architecture, e.g. cervixfm-vitl16 (see `cervixfm inspect --presets`)")
    group.add_argument("--non-strict", action="store_true",
                       help="load what fits and report the rest instead of refusing a mismatching checkpoint")


def load_model_from_args(args, device="cpu"):
    from core.models import load_backbone
    from core.paths import resolve_checkpoint

    path = resolve_checkpoint(args.checkpoint)
    return load_backbone(path, config=args.config, preset=args.preset, strict=not args.non_strict, device=device,
                         input_size=getattr(args, "size", 224))
