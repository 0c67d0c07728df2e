"""The atlas path against the published retrieval protocol on real cell crops.

Data: ``../shared/data/cdetector_portion`` (469 real 224 x 224 Pap-smear crops, 4 classes 27/47/70/325, 55 source
images), read in place. Split by source image (file-name prefix before ``_``) so no source image has cells on both
sides: a 2-fold ``StratifiedGroupKFold`` (shuffled, seed 0) gives two halves A and B; an atlas is built from one half
(the keys) and queried with the other (the queries), in both directions.

Each atlas is a real :class:`core.retrieval.CellIndex` (``atlas_from_features``; the tiny backbone's through
``build_atlas`` with an ``ImageEmbedder``, as ``cervixfm atlas build`` does); the neighbours it returns (k = 10) are
scored with ``core.metrics.retrieval_metrics``: top-1/3/5/10 hit rate and majority vote MV@5/MV@10, exactly as the
published protocol defines them. Every number is cross-checked against ``core.retrieval.protocol.evaluate_retrieval``
(the published evaluation) and the script fails if they differ.

Feature sets: the golden tiny CervixFM-layout backbone (random weights, 96-d), a random ViT-S/16 with DINOv2
initialisation (layer scale 1e-5) and with layer scales set to 1, and colour histograms (RGB + HSV, 32 bins per
channel, square-rooted) as the classical baseline. None is a trained model: the numbers document the protocol and
the floor, nothing more.

Usage (about 3-6 minutes on 2 CPU cores)::

    .venv/bin/python benchmarks/atlas_eval.py [--data ../shared/data/cdetector_portion] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from probe_floor import colour_histograms, load_crops, vit_s16_features  # noqa: E402

SHARED = Path(os.environ.get("CERVIXFM_SHARED", REPO.parent / "shared"))
METRICS = ("top1", "top3", "top5", "top10", "mv5", "mv10")


def halves(labels: np.ndarray, groups: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import StratifiedGroupKFold

    (a, b), _ = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=seed).split(
        np.zeros(len(labels)), labels, groups)
    return b, a  # the two test folds: every crop on exactly one side


def tiny_backbone_atlas(images, keys: np.ndarray, checkpoint: Path, out: Path):
    """Atlas of the key crops through the product path (ImageEmbedder + build_atlas), and the embedder."""
    from core.models import load_backbone
    from core.retrieval.atlas import build_atlas
    from core.retrieval.embedder import ImageEmbedder

    embedder = ImageEmbedder.from_backbone(load_backbone(checkpoint))
    atlas = build_atlas(out, [images.paths[i] for i in keys], [images.names[i] for i in keys],
                        images.labels[keys], ["0", "1", "2", "3"], embedder, data_root=images.root, workers=2)
    return atlas, embedder


def score(atlas, query_features: np.ndarray, query_labels: np.ndarray, key_features: np.ndarray,
          key_labels: np.ndarray) -> dict[str, float]:
    from core.metrics import retrieval_metrics
    from core.retrieval.protocol import evaluate_retrieval

    result = atlas.search(query_features, k=10)
    neighbour_labels = result.labels().astype(np.int64)
    metrics = retrieval_metrics(query_labels, neighbour_labels)
    published, indices, _ = evaluate_retrieval(key_features, key_labels, query_features, query_labels)
    if metrics != published:
        raise SystemExit(f"atlas metrics {metrics} differ from the published evaluation {published}")
    if not np.array_equal(key_labels[indices], neighbour_labels):
        raise SystemExit("atlas neighbours differ from the published evaluation")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "cdetector_portion")
    parser.add_argument("--checkpoint", type=Path, default=SHARED / "golden" / "cervixfm_tiny.pth")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not (args.data / "train.npy").is_file():
        print(f"atlas_eval: {args.data} not found (expected train/ and train.npy)", file=sys.stderr)
        return 2

    from core.retrieval.atlas import atlas_from_features

    images, groups = load_crops(args.data)
    labels = images.labels
    side_a, side_b = halves(labels, groups)
    print(f"{len(images)} crops, {len(set(groups))} source images; halves by source image (2-fold "
          f"StratifiedGroupKFold, seed 0): A {len(side_a)} crops {np.bincount(labels[side_a], minlength=4).tolist()} "
          f"from {len(set(groups[side_a]))} images, B {len(side_b)} crops "
          f"{np.bincount(labels[side_b], minlength=4).tolist()} from {len(set(groups[side_b]))} images", flush=True)
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="cervixfm-atlas-eval-"))
    features: dict[str, np.ndarray] = {}
    results: dict[str, dict[str, dict[str, float]]] = {}

    # the tiny backbone, through the product path (atlas of image files, queries embedded by the same embedder)
    name = "tiny CervixFM-layout backbone (golden, random, 96-d)"
    results[name] = {}
    for tag, keys, queries in (("A->B", side_a, side_b), ("B->A", side_b, side_a)):
        atlas, embedder = tiny_backbone_atlas(images, keys, args.checkpoint, work / f"tiny-{tag[0]}")
        query_x = embedder.embed_files([images.paths[i] for i in queries])
        results[name][tag] = score(atlas, query_x, labels[queries], atlas.vectors(np.arange(len(keys))), labels[keys])
    print(f"tiny backbone done ({time.time() - started:.0f} s)", flush=True)

    features["random ViT-S/16, DINOv2 init (layer scale 1e-5)"] = vit_s16_features(images, False)
    features["random ViT-S/16, layer scale 1"] = vit_s16_features(images, True)
    features["colour histograms (RGB+HSV, 192-d)"] = colour_histograms(images)
    print(f"features done ({time.time() - started:.0f} s)", flush=True)
    for name, x in features.items():
        results[name] = {}
        for tag, keys, queries in (("A->B", side_a, side_b), ("B->A", side_b, side_a)):
            atlas = atlas_from_features(work / f"{len(results)}-{tag[0]}", x[keys], [images.names[i] for i in keys],
                                        labels[keys], ["0", "1", "2", "3"], data_root=images.root)
            results[name][tag] = score(atlas, x[queries], labels[queries], x[keys], labels[keys])

    majority = {tag: float(np.mean(labels[q] == np.bincount(labels[k]).argmax()))
                for tag, k, q in (("A->B", side_a, side_b), ("B->A", side_b, side_a))}
    print(f"\nk = 10 neighbours; atlas = one half, queries = the other; every number equals the published evaluation "
          f"(checked). Majority-class share of the queries: A->B {majority['A->B']:.3f}, B->A {majority['B->A']:.3f}.\n")
    print("| features | atlas -> queries | " + " | ".join(m.replace("top", "top-").replace("mv", "MV@") for m in METRICS)
          + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for name, by_tag in results.items():
        for tag, m in by_tag.items():
            print(f"| {name} | {tag} | " + " | ".join(f"{m[k]:.3f}" for k in METRICS) + " |")
        mean = {k: np.mean([m[k] for m in by_tag.values()]) for k in METRICS}
        print(f"| {name} | mean | " + " | ".join(f"**{mean[k]:.3f}**" for k in METRICS) + " |")
    print(f"\n({time.time() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "majority_share": majority}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
