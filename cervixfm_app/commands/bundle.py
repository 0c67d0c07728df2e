"""``cervixfm bundle``: make or check a model bundle (backbone + preprocessing + heads in one folder)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("bundle", help="create (init) or validate (check) a model bundle folder")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    init = verbs.add_parser("init", help="create a bundle from a checkpoint and optional heads")
    init.add_argument("folder", metavar="DIR")
    init.add_argument("--checkpoint", required=True, metavar="PATH")
    init.add_argument("--preset", metavar="NAME")
    init.add_argument("--config", metavar="YAML")
    init.add_argument("--name", help="display name (default: the preset or folder name)")
    init.add_argument("--head", action="append", default=[], metavar="NAME:ROLE:FILE",
                      help="add a head, e.g. tiles:tile-classifier:probe/head.safetensors (repeatable)")
    init.add_argument("--tile-size", type=int, default=224)
    init.add_argument("--target-mpp", type=float, default=None, help="µm/px of the tiles (default 0.5)")
    init.add_argument("--copy", action="store_true", help="copy the checkpoint into the bundle (default: link by path)")
    init.set_defaults(func=run_init)
    check = verbs.add_parser("check", help="load a bundle and report what it contains")
    check.add_argument("folder", metavar="DIR")
    check.add_argument("--device", default="cpu")
    check.set_defaults(func=run_check)


def run_init(args: argparse.Namespace) -> int:
    from core.errors import CervixFMError
    from core.models import load_backbone
    from core.models.bundle import DEFAULT_TARGET_MPP, HEAD_ROLES, BundleSpec, HeadSpec, write_bundle_manifest
    from core.models.checkpoint_io import cached_sha256

    folder = Path(args.folder)
    checkpoint = Path(args.checkpoint)
    loaded = load_backbone(checkpoint, config=args.config, preset=args.preset)  # refuse a bad checkpoint up front
    folder.mkdir(parents=True, exist_ok=True)
    if args.copy:
        target = folder / checkpoint.name
        if not target.exists():
            shutil.copy2(checkpoint, target)
        checkpoint = target
    heads = []
    for item in args.head:
        parts = item.split(":", 2)
        if len(parts) != 3 or parts[1] not in HEAD_ROLES:
            raise CervixFMError(f"--head {item!r}: use NAME:ROLE:FILE with ROLE one of {', '.join(HEAD_ROLES)}.")
        name, role, file = parts
        src = Path(file)
        if not src.is_file():
            raise CervixFMError(f"--head {item!r}: {src} does not exist.")
        (folder / "heads").mkdir(exist_ok=True)
        dst = folder / "heads" / f"{name}{src.suffix}"
        shutil.copy2(src, dst)
        heads.append(HeadSpec(name, role, dst))
    preset = loaded.preset
    spec = BundleSpec(
        folder=folder, name=args.name or (preset.name if preset else folder.name), checkpoint=checkpoint,
        preset=args.preset or (preset.name if preset else None), config=args.config, sha256=cached_sha256(checkpoint),
        tile_size=args.tile_size, target_mpp=args.target_mpp or DEFAULT_TARGET_MPP,
        mean=tuple(preset.mean) if preset else (0.485, 0.456, 0.406),
        std=tuple(preset.std) if preset else (0.229, 0.224, 0.225), heads=tuple(heads),
    )
    path = write_bundle_manifest(spec)
    print(f"wrote {path}", file=sys.stderr)
    return run_check(argparse.Namespace(folder=str(folder), device="cpu"))


def run_check(args: argparse.Namespace) -> int:
    from core.pipeline.analysis_model import model_from_bundle

    model = model_from_bundle(args.folder, device=args.device)
    print(f"bundle {args.folder}: {model.name}")
    print(f"  backbone: {model.backbone.summary()}")
    print(f"  tiles: {model.tile_size}px at {model.target_mpp} µm/px; sha256 {model.sha256[:16]}…")
    for name, head in model.heads.items():
        print(f"  head {name}: {head.spec.role} ({head.kind}), classes {', '.join(head.classes)}")
    if not model.heads:
        print("  no heads: features and similar-cell search only")
    return 0
