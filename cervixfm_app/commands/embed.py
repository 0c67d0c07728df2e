"""``cervixfm embed``: CervixFM features of image files, as a (N, D) float32 .npy plus the file names."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._model_args import add_model_arguments, load_model_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "embed", help="embed image files with the backbone (normed CLS features)",
        description="Write the normed CLS features (N, D) float32 of every image, in sorted file-name order, to "
                    "FEATURES.npy and the names to FEATURES.txt. Images of the input size (--size, 224 px by default, "
                    "the published protocol) go in as they are; others are resized (shorter side to that size, "
                    "bicubic) and centre-cropped.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIRS", help="image files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, metavar="FEATURES.npy", help="output features file")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--workers", type=int, default=2, help="image-decoding threads")
    add_model_arguments(p, input_size=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.errors import CervixFMError
    from core.images import collect_images, read_rgb
    from core.io import atomic_save_npy, atomic_write_text
    from core.models.inference import embed_images, prefetched, select_device
    from core.models.loader import input_size_note

    if args.batch_size < 1:
        raise CervixFMError("--batch-size must be at least 1.")
    out = Path(args.out)
    if out.suffix != ".npy":
        out = out.with_suffix(out.suffix + ".npy") if out.suffix else out.with_suffix(".npy")
    if not out.parent.exists():
        raise CervixFMError(f"Output folder {out.parent} does not exist.")
    images = collect_images(args.inputs)
    if not images:
        raise CervixFMError(f"No images (.png, .jpg, .tif, ...) found in {' '.join(args.inputs)}.")
    device = select_device(args.device)
    loaded = load_model_from_args(args, device=device)
    print(f"model: {loaded.summary()}", file=sys.stderr)
    for note in [*loaded.notes, input_size_note(loaded)]:
        if note:
            print(f"  note: {note}", file=sys.stderr)
    prep = loaded.preprocessing()
    paths = [p for _, p in images]
    stream = prefetched(paths, read_rgb, ahead=4 * args.batch_size, workers=max(1, args.workers))
    with tqdm(total=len(paths), unit="img", desc="embed", disable=None, file=sys.stderr) as bar:
        features = embed_images(loaded.model, stream, prep, batch_size=args.batch_size, device=device,
                                feature=loaded.feature, progress=bar.update)
    names_path = out.with_suffix(".txt")
    atomic_save_npy(out, features)
    atomic_write_text(names_path, "".join(f"{name}\n" for name, _ in images))
    print(f"wrote {out} {features.shape[0]}x{features.shape[1]} float32 and {names_path}", file=sys.stderr)
    return 0
