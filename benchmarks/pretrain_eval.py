"""Does pretraining learn? 20-NN accuracy of the pretrained teacher against the same ViT randomly initialised.

Two experiments, each one command:

``cells``: DINOv2 pretraining (``--config tiny``: ViT 192-d, 6 blocks, patch 16, 112-px global / 48-px local crops,
4096 prototypes, batch 32, 450 iterations) on the 469 real cell crops of ``../shared/data/cdetector_portion/train``
(no labels used), then a k-NN evaluation on their 4 classes. Keys and queries come from disjoint *source images*
(file-name prefix): 5-fold ``StratifiedGroupKFold`` (shuffled, seed 0), every crop a query once; weighted 20-NN
(cosine, weights exp(sim / 0.07), DINO's k-NN classifier); mean ± population std over folds. Features: the normed
CLS token at the training resolution (crops resized to 112 px). Compared: the exported teacher, the student at
iteration 0 (the same architecture and initialisation, i.e. what pretraining started from), and colour histograms.

``synthetic``: a few 4096 x 4096 synthetic Pap smears (``core.synthetic``), pretraining on random 224-px tiles at
0.5 µm/px from their cell-bearing area (``train.dataset_path`` = the slides), then the same k-NN evaluation on crops
centred on every ground-truth cell (224 px at 0.5 µm/px, read with ``slide.read_scaled``), classes = the ground-truth
cell classes, keys and queries from different slides.

Usage (about 20 and 6 minutes on an idle core, much longer on a shared machine: run it in the background)::

    nice .venv/bin/python benchmarks/pretrain_eval.py cells --out /tmp/pretrain_cells --docs-image
    nice .venv/bin/python benchmarks/pretrain_eval.py synthetic --out /tmp/pretrain_synthetic

Extra ``key=value`` arguments override the pretraining settings; ``--skip-train`` re-evaluates an existing run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

SHARED = Path(os.environ.get("CERVIXFM_SHARED", REPO.parent / "shared"))
CELLS = SHARED / "data" / "cdetector_portion"


# ------------------------------------------------------------------------------------------------- features
def embed(model, images: list[np.ndarray], size: int) -> np.ndarray:
    from core.models.inference import embed_images
    from core.models.preprocessing import Preprocessing

    model.eval()
    return embed_images(model, images, Preprocessing(size=size), batch_size=64)


def colour_histograms(images: list[np.ndarray], bins: int = 32) -> np.ndarray:
    from PIL import Image

    rows = []
    for img in images:
        hsv = np.asarray(Image.fromarray(img).convert("HSV"))
        parts = [np.histogram(ch, bins=bins, range=(0, 256))[0] for ch in (*img.transpose(2, 0, 1), *hsv.transpose(2, 0, 1))]
        h = np.concatenate(parts).astype(np.float64)
        rows.append(np.sqrt(h / h.sum()))
    return np.asarray(rows, np.float32)


def grouped_knn(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 20, folds: int = 5,
                seed: int = 0) -> dict[str, float]:
    from sklearn.model_selection import StratifiedGroupKFold

    from training.pretrain.knn import knn_metrics

    n_groups = len(set(groups.tolist()))
    splitter = StratifiedGroupKFold(n_splits=min(folds, n_groups), shuffle=True, random_state=seed)
    per_fold = []
    for keys, queries in splitter.split(features, labels, groups):
        per_fold.append(knn_metrics(features[keys], labels[keys], features[queries], labels[queries], k=k,
                                    num_classes=int(labels.max() + 1)))
    out = {}
    for key in per_fold[0]:
        values = np.array([f[key] for f in per_fold])
        out[key] = float(values.mean())
        out[key + "_std"] = float(values.std())
    out["folds"] = len(per_fold)
    return out


def compare(cfg, run: Path, images: list[np.ndarray], labels: np.ndarray, groups: np.ndarray) -> dict:
    import torch

    from core.models import load_backbone
    from training.pretrain.meta_arch import SSLMetaArch

    size = int(cfg.crops.global_crops_size)
    teacher = load_backbone(run / "teacher_backbone.pth", config=run / "backbone_config.json").model
    start = SSLMetaArch(cfg, torch.device("cpu"), seed=int(cfg.train.seed)).student["backbone"]
    rows = {
        "pretrained teacher": grouped_knn(embed(teacher, images, size), labels, groups),
        "random init (same ViT, iteration 0)": grouped_knn(embed(start, images, size), labels, groups),
        "colour histograms": grouped_knn(colour_histograms(images), labels, groups),
    }
    majority = np.bincount(labels).max() / len(labels)
    return {"rows": rows, "majority_class_accuracy": float(majority), "n_images": len(images),
            "class_counts": np.bincount(labels).tolist(), "n_groups": len(set(groups.tolist()))}


def print_table(title: str, result: dict) -> None:
    print(f"\n{title}: {result['n_images']} crops, classes {result['class_counts']}, {result['n_groups']} groups; "
          f"majority-class accuracy {result['majority_class_accuracy']:.3f}")
    print(f"{'features':40s} {'20-NN accuracy':>18s} {'20-NN balanced acc.':>22s}")
    for name, r in result["rows"].items():
        print(f"{name:40s} {r['knn20_accuracy']:.3f} ± {r['knn20_accuracy_std']:.3f}      "
              f"{r['knn20_balanced_accuracy']:.3f} ± {r['knn20_balanced_accuracy_std']:.3f}")


# ------------------------------------------------------------------------------------------------ experiments
def pretrain(cfg, skip: bool) -> float:
    from training.pretrain import run_pretraining

    run = Path(str(cfg.train.output_dir))
    if skip and (run / "teacher_backbone.pth").is_file():
        return 0.0
    start = time.perf_counter()
    run_pretraining(cfg, progress=True)
    return time.perf_counter() - start


def cells(args) -> dict:
    from core.images import read_rgb
    from training.datasets import read_label_table
    from training.pretrain import load_config

    cfg = load_config("tiny", [f"train.dataset_path={CELLS / 'train'}", f"train.output_dir={args.out}",
                               "evaluation.eval_period_iterations=0"] + args.overrides)
    seconds = pretrain(cfg, args.skip_train)
    names, _, labels = read_label_table(CELLS / "train.npy", num_classes=4)
    images = [read_rgb(CELLS / "train" / n) for n in names]
    groups = np.array([n.split("_", 1)[0] for n in names])
    result = compare(cfg, Path(args.out), images, labels, groups)
    result["pretrain_seconds"] = seconds
    print_table("cdetector_portion", result)
    if args.docs_image:
        target = REPO / "docs" / "images" / "pretrain_loss.png"
        shutil.copyfile(Path(args.out) / "loss_curve.png", target)
        print(f"loss curve copied to {target} ({target.stat().st_size // 1024} KB)")
    return result


def synthetic(args) -> dict:
    from shapely.geometry import shape

    from core.slides import open_slide
    from core.synthetic import CLASS_NAMES, generate_slide
    from training.pretrain import load_config

    out = Path(args.out)
    slides_dir = out / "slides"
    slides_dir.mkdir(parents=True, exist_ok=True)
    infos = []
    for seed in range(args.slides):
        path = slides_dir / f"synthetic_{seed}.tiff"
        if not path.is_file():
            generate_slide(path, 4096, 4096, seed=seed, abnormal_fraction=0.3)
        infos.append(path)
    cfg = load_config("tiny", [f"train.dataset_path={slides_dir}", f"train.output_dir={out / 'run'}",
                               "evaluation.eval_period_iterations=0", "optim.epochs=10"] + args.overrides)
    seconds = pretrain(cfg, args.skip_train)
    tile, mpp = int(cfg.train.slide_tile_size), float(cfg.train.slide_tile_mpp)
    images, labels, groups = [], [], []
    for k, path in enumerate(infos):
        features = json.loads(path.with_suffix(".geojson").read_text())["features"]
        with open_slide(path) as slide:
            w0, h0 = tile * mpp / slide.mpp[0], tile * mpp / slide.mpp[1]
            for f in features:
                cx, cy = shape(f["geometry"]).centroid.coords[0]
                images.append(slide.read_scaled(cx - w0 / 2, cy - h0 / 2, w0, h0, tile, tile))
                labels.append(CLASS_NAMES.index(f["properties"]["classification"]["name"]))
                groups.append(k)
    result = compare(cfg, out / "run", images, np.array(labels), np.array(groups))
    result["pretrain_seconds"] = seconds
    result["classes"] = list(CLASS_NAMES)
    print_table("synthetic slides (ground-truth cell classes)", result)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=("cells", "synthetic"))
    parser.add_argument("--out", required=True, help="run folder (checkpoints, exports, metrics)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    parser.add_argument("--slides", type=int, default=6, help="synthetic slides to generate")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the existing run in --out")
    parser.add_argument("--docs-image", action="store_true", help="copy the loss curve to docs/images/pretrain_loss.png")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_intermixed_args()  # KEY=VALUE may follow options
    import torch

    torch.set_num_threads(args.threads)
    result = cells(args) if args.experiment == "cells" else synthetic(args)
    from training.reporting import write_json

    target = (Path(args.out) / "eval.json") if args.experiment == "cells" else (Path(args.out) / "run" / "eval.json")
    write_json(target, result)
    print(f"results in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
