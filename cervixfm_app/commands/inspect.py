"""``cervixfm inspect``: what a checkpoint file is (layout, architecture, preset) and whether it loads strictly."""

from __future__ import annotations

import argparse
import json

from ._model_args import add_model_arguments, load_model_from_args


def register(sub) -> None:
    p = sub.add_parser("inspect", help="describe a checkpoint: layout, architecture, matching preset, load report")
    p.add_argument("--presets", action="store_true", help="list the known presets and exit")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.presets:
        from core.models.presets import PRESETS

        for name, preset in PRESETS.items():
            c = preset.config
            print(f"{name:18s} {c.embed_dim:5d}-d {c.depth:3d} blocks {c.num_heads:3d} heads /{c.patch_size} "
                  f"{c.ffn_layer:11s} reg {c.num_register_tokens}  {preset.description}")
        return 0
    loaded = load_model_from_args(args)
    n_params = sum(p.numel() for p in loaded.model.parameters())
    info = {
        "file": str(loaded.path), "layout": loaded.layout, "preset": loaded.preset.name if loaded.preset else None,
        "parameters": n_params, "config": loaded.config.to_dict(), "notes": loaded.notes,
        "strict_load": loaded.report.ok,
    }
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(loaded.summary())
        print(f"parameters: {n_params:,}")
        for note in loaded.notes:
            print(f"note: {note}")
        print("strict load: ok" if loaded.report.ok else "load report:\n" + loaded.report.describe())
    return 0
