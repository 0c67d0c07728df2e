"""Cell-image retrieval evaluation as published: test-split queries against training-split keys.

Both sets are centred on the mean of the keys and L2-normalised; an exact L2 search (faiss ``IndexFlatL2``, the same
ranking as cosine similarity after normalisation) returns the 10 nearest keys of each query. Reported: top-1/3/5/10
hit rate (any of the first k has the query's label) and majority vote MV@5, MV@10 (ties to the label met first,
i.e. nearest). With fewer than 10 keys, k shrinks to the number of keys and the metrics it cannot support are left out.

The protocol itself (centring, normalisation, exact search) lives in ``core.retrieval.protocol``, shared with the
cell index and atlases, so an atlas query ranks exactly as this evaluation does.

Outputs in ``--save_path``: ``retrieval.json``, ``retrieval.csv`` and ``neighbours.csv`` (each query's neighbours,
nearest first).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core.errors import CervixFMError
from core.retrieval.protocol import evaluate_retrieval, exact_search, prepare_embeddings

from .cli_args import add_retrieval_arguments, run_module_cli
from .reporting import RunLog, write_csv, write_json

__all__ = ["evaluate_retrieval", "exact_search", "prepare_embeddings", "run", "handle", "main"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from .datasets import load_dataset
    from .feature_cache import backbone_identity, cached_features
    from .linear_probe import cache_file, load_backbone_from_args, make_embedder, resolve_device

    log = RunLog()
    if args.k < 1:
        raise CervixFMError("--k must be at least 1.")
    if args.num_class is not None and args.num_class < 2:
        raise CervixFMError("--num_class must be at least 2.")
    splits = load_dataset(args.data_path, args.num_class, args.seed, args.trust_pickled_labels)
    if len(splits.train) == 0 or len(splits.test) == 0:
        raise CervixFMError(f"Retrieval needs both a training split (keys) and a test split (queries) in {args.data_path}.")
    device = resolve_device(args.device)
    loaded = load_backbone_from_args(args, device)
    log(f"backbone: {loaded.summary()}")
    out = Path(args.save_path)
    out.mkdir(parents=True, exist_ok=True)
    identity = backbone_identity(loaded)
    feature_dir = Path(args.feature_path) if args.feature_path else out / "features"
    embed = make_embedder(loaded, device, args.embed_batch_size, args.workers)
    key_cache = Path(args.key_feature_path) if args.key_feature_path else cache_file(feature_dir, splits.train)
    query_cache = Path(args.query_feature_path) if args.query_feature_path else cache_file(feature_dir, splits.test)
    key_x = cached_features(key_cache, identity, splits.train.names, splits.train.paths, embed,
                            overwrite=args.overwrite_cache, log=log)
    query_x = cached_features(query_cache, identity, splits.test.names, splits.test.paths, embed,
                              overwrite=args.overwrite_cache and query_cache != key_cache, log=log)
    metrics, indices, distances = evaluate_retrieval(key_x, splits.train.labels, query_x, splits.test.labels, args.k)
    info = {"data_path": str(args.data_path), "layout": splits.layout, "n_keys": len(splits.train),
            "n_queries": len(splits.test), "k": int(indices.shape[1]), "backbone": identity}
    write_json(out / "retrieval.json", {**info, **metrics})
    write_csv(out / "retrieval.csv", ["metric", "value"], list(metrics.items()))
    header = ["query", "label"] + [f"{what}_{j + 1}" for j in range(indices.shape[1]) for what in ("neighbour", "label")]
    rows = []
    for q, name in enumerate(splits.test.names):
        row: list[Any] = [name, int(splits.test.labels[q])]
        for j in indices[q]:
            row += [splits.train.names[j], int(splits.train.labels[j])]
        rows.append(row)
    write_csv(out / "neighbours.csv", header, rows)
    log("retrieval: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + f"; results in {out}")
    log.save(out / "log.txt")
    return {**info, **metrics}


def handle(args: argparse.Namespace) -> int:
    run(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_module_cli("python -m training.retrieval_eval", "Cell-image retrieval evaluation (published protocol).",
                          add_retrieval_arguments, handle, argv)


if __name__ == "__main__":
    sys.exit(main())
