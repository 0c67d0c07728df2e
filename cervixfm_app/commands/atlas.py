"""``cervixfm atlas build`` / ``cervixfm atlas query``: labelled reference atlases and k-NN label suggestions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._retrieval_args import add_backbone_arguments


def register(sub) -> None:
    p = sub.add_parser(
        "atlas", help="reference atlases: build from a labelled data set, query with crops",
        description="An atlas is a cell index of labelled crops. Queries return labelled neighbours (published "
                    "retrieval protocol: key-mean centring, L2 normalisation, exact L2 search) and a suggested "
                    "label: the majority of the k nearest, ties to the nearest, with its share of the votes.",
    )
    actions = p.add_subparsers(dest="atlas_command", metavar="ACTION")
    actions.required = True

    b = actions.add_parser("build", help="embed a labelled data set into a new atlas",
                           description="Data set layouts as published: train/ test/ train.npy test.npy, or data/ "
                                       "data_label.npy (rows [file name, label], labels 0..C-1).")
    b.add_argument("--data_path", "--data-path", dest="data_path", required=True, metavar="DIR")
    b.add_argument("--out", "--save_path", dest="out", required=True, metavar="ATLAS", help="atlas folder to create")
    b.add_argument("--split", choices=("all", "train", "test"), default="all",
                   help="which images go in (default all; 'train' keeps the test split out for an evaluation)")
    b.add_argument("--num_class", "--num-classes", dest="num_class", type=int, metavar="C",
                   help="number of classes (default: largest label + 1)")
    b.add_argument("--class-names", "--class_names", dest="class_names", metavar="A,B,…",
                   help="names of classes 0..C-1 (default: the label numbers)")
    b.add_argument("--seed", type=int, default=None, help="seed of the 80/20 split of a data/ layout (with --split)")
    b.add_argument("--trust-pickled-labels", action="store_true",
                   help="allow label tables that store Python objects (only for files you trust)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing atlas at --out")
    add_backbone_arguments(b)
    b.set_defaults(func=_build)

    q = actions.add_parser("query", help="suggest labels for crops from their nearest atlas entries")
    q.add_argument("--atlas", required=True, metavar="ATLAS")
    q.add_argument("--image", required=True, nargs="+", metavar="IMAGE", help="cell crop(s) or folders of crops")
    q.add_argument("-k", "--k", type=int, default=10, help="neighbours that vote (published MV@5/MV@10: 5 or 10)")
    q.add_argument("--json", metavar="OUT.json", help="also write suggestions and neighbours here")
    add_backbone_arguments(q, default_from_index=True)
    q.set_defaults(func=_query)


def _labelled_images(args):
    """(paths, names relative to the data folder, int labels) of the split(s) asked for."""
    from core.errors import InputError
    from training.datasets import detect_layout, load_dataset, load_table

    root = Path(args.data_path)
    if not root.is_dir():
        raise InputError(f"Data set folder {root} does not exist.")
    layout = detect_layout(root)
    if args.split == "all":
        if layout == "single-folder":
            parts = [load_table(root / "data", root / "data_label.npy", args.num_class, args.trust_pickled_labels)]
        else:
            parts = [load_table(root / s, root / f"{s}.npy", args.num_class, args.trust_pickled_labels)
                     for s in ("train", "test") if (root / f"{s}.npy").is_file()]
    else:
        splits = load_dataset(root, args.num_class, args.seed, args.trust_pickled_labels, need=(args.split,))
        parts = [getattr(splits, args.split)]
    paths, names, labels = [], [], []
    for images in parts:
        prefix = images.root.relative_to(root).as_posix()
        paths += images.paths
        names += [f"{prefix}/{n}" for n in images.names]
        labels += images.labels.tolist()
    if not names:
        raise InputError(f"No labelled images in the {args.split} split of {root}.")
    return paths, names, labels


def _class_names(args, labels) -> list[str]:
    from core.errors import InputError

    count = args.num_class or (max(labels) + 1)
    if args.class_names:
        names = [n.strip() for n in args.class_names.split(",")]
        if len(names) != count:
            raise InputError(f"--class-names lists {len(names)} names but the data set has {count} classes "
                             f"(labels 0..{count - 1}); give one name per class.")
        return names
    return [str(i) for i in range(count)]


def _build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.retrieval.atlas import build_atlas

    from ._retrieval_args import make_embedder

    paths, names, labels = _labelled_images(args)
    classes = _class_names(args, labels)
    out = Path(args.out)
    if (out / "manifest.json").exists() and not args.overwrite:
        from core.errors import InputError

        raise InputError(f"{out} already holds an index. Pass --overwrite to replace it.")
    embedder = make_embedder(args)
    print(f"embedding {len(paths)} images of {len(classes)} classes with {embedder.identity['name']} "
          f"({embedder.identity['embed_dim']}-d)", file=sys.stderr)
    with tqdm(total=len(paths), unit="img", desc="atlas", disable=None, file=sys.stderr) as bar:
        atlas = build_atlas(out, paths, names, labels, classes, embedder, data_root=args.data_path,
                            overwrite=args.overwrite, workers=args.workers, progress=bar.update)
    counts = atlas.label_counts()
    print(f"atlas {out}: {len(atlas)} images; " + ", ".join(f"{c} {counts.get(c, 0)}" for c in classes))
    return 0


def _query(args: argparse.Namespace) -> int:
    from core.errors import CervixFMError
    from core.images import collect_images
    from core.retrieval.atlas import open_atlas, query_atlas
    from core.retrieval.export import write_json

    from ._retrieval_args import make_embedder, print_hits

    if args.k < 1:
        raise CervixFMError("-k must be at least 1.")
    atlas = open_atlas(args.atlas)
    images = collect_images(args.image)
    if not images:
        raise CervixFMError(f"No images found in {' '.join(args.image)}.")
    embedder = make_embedder(args, atlas)
    features = embedder.embed_files([p for _, p in images], workers=args.workers)
    suggestions = query_atlas(atlas, features, args.k, backbone=embedder.identity)
    for (name, _), s in zip(images, suggestions):
        votes = ", ".join(f"{label} {n}" for label, n in s.votes.items())
        print(f"{name}: {s.label} (confidence {s.confidence:.2f}; votes {votes})")
        print_hits(s.neighbours)
        print()
    if args.json:
        write_json(args.json, [{"image": name, **s.to_dict()} for (name, _), s in zip(images, suggestions)])
    return 0
