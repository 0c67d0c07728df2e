"""``cervixfm convert``: rewrite a checkpoint in another layout (CervixFM chunked, DINOv2 hub, timm, teacher)."""

from __future__ import annotations

import argparse
import sys

from ._model_args import add_model_arguments, load_model_from_args

LAYOUTS = ("cervixfm", "dinov2-hub", "timm", "teacher")


def register(sub) -> None:
    p = sub.add_parser("convert", help="save a checkpoint in another layout (cervixfm, dinov2-hub, timm, teacher)")
    p.add_argument("--to", required=True, choices=LAYOUTS, help="target layout")
    p.add_argument("--out", required=True, metavar="PATH", help=".pth or .safetensors output")
    p.add_argument("--block-chunks", type=int, default=None,
                   help="chunks for the cervixfm/teacher layouts (default: the model's, else 4)")
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.errors import CervixFMError
    from core.models.checkpoint_io import save_weights_file
    from core.models.layouts import export_cervixfm, export_teacher, export_timm, model_to_canonical

    loaded = load_model_from_args(args)
    canonical = model_to_canonical(loaded.model.state_dict())
    chunks = args.block_chunks if args.block_chunks is not None else (loaded.config.block_chunks or 4)
    if args.to == "cervixfm":
        state = export_cervixfm(canonical, chunks)
    elif args.to == "dinov2-hub":
        state = export_cervixfm(canonical, 0)
    elif args.to == "timm":
        state = export_timm(canonical)
    else:
        if args.out.endswith(".safetensors"):
            raise CervixFMError("The teacher layout is a nested dict; write it as .pth, not .safetensors.")
        state = export_teacher(canonical, chunks)
    save_weights_file(state, args.out)
    print(f"wrote {args.out} ({args.to} layout)", file=sys.stderr)
    if args.to == "timm":
        c = loaded.config
        print(f"timm model: VisionTransformer(img_size={c.img_size}, patch_size={c.patch_size}, embed_dim={c.embed_dim}, "
              f"depth={c.depth}, num_heads={c.num_heads}, mlp_ratio={2 * c.ffn_hidden / c.embed_dim if c.ffn_layer == 'swiglufused' else c.ffn_hidden / c.embed_dim:g}"
              f"{', mlp_layer=SwiGLUPacked, act_layer=nn.SiLU' if c.ffn_layer == 'swiglufused' else ''}, "
              f"init_values=1e-5, reg_tokens={c.num_register_tokens}, no_embed_class={bool(c.num_register_tokens)}, "
              "num_classes=0)", file=sys.stderr)
    return 0
