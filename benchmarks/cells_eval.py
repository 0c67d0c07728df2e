"""Accuracy of the cell stage on synthetic Pap smears with ground truth: localisation, crops, classification.

Slides: ``--train`` + ``--test`` synthetic slides (different seeds, so different stains, focus and layouts), each
with a QuPath GeoJSON of every cell (class, outline, nucleus). For every backbone:

1. The cell stage (``core.cells.CellAnalysis``, the classical detector, crops at 0.5 µm/px) on every slide.
2. Localisation against the ground truth: F1 at IoU >= 0.5 over cells that overlap no other cell (detections lying
   mostly on overlapping cells are ignored), overlapping cells' recall at IoU >= 0.5 reported separately, nucleus
   centre error in µm, duplicate cells (two detections sharing a nucleus) and crop centring (ground-truth nucleus
   centre of a matched cell relative to its crop centre, in crop pixels).
3. Classification: every detected cell labelled by the ground-truth cell whose nucleus holds its nucleus centre; a
   ``cell-classifier`` head trained with the published linear-probe recipe on the train slides' cells, tested on
   the test slides' cells: balanced accuracy over the 6 classes (chance 1/6) and abnormal (LSIL, HSIL) vs normal
   AUROC of the abnormality score ``1 - P(normal)``. The head is trained on standardised embeddings (the scaling
   folded into the head) and, for comparison, on raw embeddings exactly as the published probe does. For
   understanding, the same protocol on the detector's 9 hand-crafted measurements, and a class-balanced logistic
   regression on them.

Backbones (``--backbones``): ``tiny`` = the golden 96-d test checkpoint (DINOv2-style layer scale 1e-5, untrained:
its CLS feature hardly depends on the image); ``vits16-ls1`` = a random ViT-S/16 with layer scales set to 1 (random
but image-dependent features); or a path to a real checkpoint (e.g. CervixFM.pth).

Usage::

    .venv/bin/python benchmarks/cells_eval.py [--train 6 --test 3 --side 6144] [--backbones tiny vits16-ls1]
        [--workdir DIR] [--json out.json]
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

SHARED = Path(os.environ.get("CERVIXFM_SHARED", REPO.parent / "shared"))
ABNORMAL = ("LSIL", "HSIL")


def make_slides(work: Path, seeds: list[int], side: int) -> list[Path]:
    from core.synthetic import generate_slide

    out = []
    for seed in seeds:
        path = work / f"smear_{seed}.tiff"
        if not path.exists() or not path.with_suffix(".geojson").exists():
            generate_slide(path, side, side, seed=seed, abnormal_fraction=0.3, density=1.5)
        out.append(path)
    return out


def backbone_checkpoint(name: str, work: Path) -> Path:
    if name == "tiny":
        return SHARED / "golden" / "cervixfm_tiny.pth"
    if name == "vits16-ls1":
        import torch

        from core.models import ViTConfig, build_vit

        path = work / "vits16_ls1.pth"
        if not path.exists():
            torch.manual_seed(0)
            config = ViTConfig(embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224, ffn_layer="mlp")
            state = build_vit(config).state_dict()
            for key in state:
                if key.endswith(".gamma"):
                    state[key] = torch.ones_like(state[key])
            torch.save(state, path)
        return path
    return Path(name)


def crop_offsets(table, centres: np.ndarray, rows: np.ndarray, mpp_crop: float, slide_mpp: float) -> np.ndarray:
    """Distance of level-0 ``centres`` from the centre of the crops of cells ``rows``, in crop pixels."""
    if not len(rows):
        return np.zeros(0)
    boxes = table.crop_boxes[rows]
    middle = boxes[:, :2] + boxes[:, 2:] / 2
    return np.hypot(*(np.asarray(centres) - middle).T) * slide_mpp / mpp_crop


def localisation(results, truths, slide_mpp: float, crop_mpp: float) -> dict:
    from core.cells.evaluate import duplicate_pairs, localisation_report, match_cells

    tp = fp = fn = 0
    overlap_hit = overlap_n = 0
    solo_err, all_err, offsets, own, dups, per_slide = [], [], [], [], 0, []
    for res, truth in zip(results, truths):
        table = res.table
        polys = table.polygons()
        rep = localisation_report(polys, table.centres, truth, slide_mpp)
        nr = rep["non_overlapping"]
        tp, fp, fn = tp + nr["tp"], fp + nr["fp"], fn + nr["fn"]
        overlap_n += rep["truth_overlapping"]
        overlap_hit += round(rep["overlapping"]["recall_at_iou"] * rep["truth_overlapping"]) \
            if rep["truth_overlapping"] else 0
        d, t, _ = match_cells(list(polys), truth.polygons, 0.5)
        err = np.hypot(*(table.centres[d] - truth.nucleus_centres[t]).T) * slide_mpp if len(d) else np.zeros(0)
        solo = ~truth.overlapping[t] if len(t) else np.zeros(0, bool)
        solo_err.append(err[solo])
        all_err.append(err)
        own.append(crop_offsets(table, table.centres, np.arange(len(table)), crop_mpp, slide_mpp))
        offsets.append(crop_offsets(table, truth.nucleus_centres[t[solo]], d[solo], crop_mpp, slide_mpp))
        dups += len(duplicate_pairs(table.nuclei(), table.centres, 0.1))
        per_slide.append(round(nr["f1"], 4))
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    solo_err, all_err, offsets, own = (np.concatenate(x) for x in (solo_err, all_err, offsets, own))
    return {
        "non_overlapping": {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r,
                            "f1": 2 * p * r / (p + r) if tp else 0.0, "f1_per_slide": per_slide},
        "overlapping": {"cells": overlap_n, "recall_at_iou_0.5": overlap_hit / overlap_n if overlap_n else None},
        "nucleus_error_um_non_overlapping": {"median": float(np.median(solo_err)), "max": float(solo_err.max()),
                                             "share_within_3um": float((solo_err <= 3).mean())},
        "nucleus_error_um_all_matched": {"median": float(np.median(all_err)), "p95": float(np.percentile(all_err, 95)),
                                         "share_within_3um": float((all_err <= 3).mean())},
        "duplicates": dups,
        "crop_centre_offset_px": {"max": float(own.max()), "share_within_4px": float((own <= 4).mean()),
                                  "cells": int(len(own))},
        "crop_centre_offset_px_truth_non_overlapping": {
            "max": float(offsets.max()), "p99": float(np.percentile(offsets, 99)),
            "share_within_4px": float((offsets <= 4).mean()), "cells": int(len(offsets))},
    }


def classification(train_cells, test_cells, opts, standardize: bool = True) -> dict:
    from core.cells.classify import CellClassifier, normal_mask
    from core.metrics import balanced_accuracy, binary_auroc, confusion_matrix
    from training.cell_classifier import train_cell_classifier

    head, fit = train_cell_classifier(train_cells, opts, standardize=standardize)
    clf = CellClassifier("eval", head, train_cells.classes, None, normal_mask(train_cells.classes))
    out = clf.outputs(test_cells.features)
    pred = out["probs"].argmax(axis=1)
    abnormal = np.isin(np.array(train_cells.classes)[test_cells.labels], ABNORMAL)
    cm = confusion_matrix(test_cells.labels, pred, len(train_cells.classes))
    return {
        "balanced_accuracy": balanced_accuracy(test_cells.labels, pred),
        "chance": 1.0 / len(np.unique(test_cells.labels)),
        "abnormal_auroc": binary_auroc(abnormal.astype(int), out["abnormality"]),
        "recall_per_class": {c: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None
                             for i, c in enumerate(train_cells.classes)},
        "confusion_matrix": cm.tolist(), "best_epoch": fit.best_epoch,
        "train_cells": train_cells.class_counts(), "test_cells": test_cells.class_counts(),
    }


def measurement_baseline(train, test) -> dict:
    """The detector's measurements (standardised by the train statistics), class-balanced logistic regression."""
    from sklearn.linear_model import LogisticRegression

    from core.metrics import balanced_accuracy, binary_auroc

    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    model.fit(train.features, train.labels)
    probs = model.predict_proba(test.features)
    full = np.zeros((len(probs), len(train.classes)))
    full[:, model.classes_] = probs
    normal = ~np.isin(np.array(train.classes), ABNORMAL)
    abnormality = 1 - full[:, normal].sum(axis=1)
    abnormal = np.isin(np.array(train.classes)[test.labels], ABNORMAL)
    return {"balanced_accuracy": balanced_accuracy(test.labels, full.argmax(axis=1)),
            "abnormal_auroc": binary_auroc(abnormal.astype(int), abnormality)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=6, help="training slides")
    ap.add_argument("--test", type=int, default=3, help="test slides")
    ap.add_argument("--side", type=int, default=6144, help="slide side in level-0 px (0.25 µm/px)")
    ap.add_argument("--seed-base", type=int, default=300,
                    help="train slides use seeds base+1.., test slides base+101.. (100 was used while tuning)")
    ap.add_argument("--backbones", nargs="+", default=["tiny", "vits16-ls1"])
    ap.add_argument("--patience", type=int, default=5, help="linear-probe early stop (published: 5)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import dataclasses

    from core.cells import CellAnalysis, CellOptions, load_cells
    from core.cells.evaluate import read_truth
    from core.pipeline.analysis_model import model_from_checkpoint
    from core.synthetic.classes import CLASS_NAMES
    from training.cell_classifier import labelled_cells
    from training.probe_training import ProbeOptions

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cervixfm-cells-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    train_seeds = list(range(args.seed_base + 1, args.seed_base + 1 + args.train))
    test_seeds = list(range(args.seed_base + 101, args.seed_base + 101 + args.test))
    t0 = time.perf_counter()
    slides = make_slides(work, train_seeds + test_seeds, args.side)
    truths = [read_truth(p.with_suffix(".geojson")) for p in slides]
    print(f"{len(slides)} synthetic slides of {args.side}^2 px at 0.25 µm/px ({args.train} train, {args.test} "
          f"test; {sum(len(t) for t in truths)} ground-truth cells) made in {time.perf_counter() - t0:.0f} s; {work}")
    report: dict = {"slides": {"train_seeds": train_seeds, "test_seeds": test_seeds, "side": args.side},
                    "backbones": {}}
    opts = ProbeOptions(patience=args.patience)
    for name in args.backbones:
        model = model_from_checkpoint(backbone_checkpoint(name, work), device="cpu")
        t1 = time.perf_counter()
        results = []
        for path in slides:
            folder = work / f"cells_{Path(name).stem}" / path.stem
            results.append(CellAnalysis(path, folder, model, options=CellOptions(index=False)).run())
        seconds = time.perf_counter() - t1
        loc = localisation(results, truths, 0.25, model.target_mpp)
        files = [load_cells(r.folder) for r in results]

        def cells_of(idx, features="embeddings"):
            return labelled_cells([files[i] for i in idx], [truths[i] for i in idx], classes=CLASS_NAMES,
                                  features=features)

        train_idx, test_idx = list(range(args.train)), list(range(args.train, len(slides)))
        train_cells, test_cells = cells_of(train_idx), cells_of(test_idx)
        cls = classification(train_cells, test_cells, opts)
        cls_raw = classification(train_cells, test_cells, opts, standardize=False)
        tr_m, te_m = cells_of(train_idx, "measurements"), cells_of(test_idx, "measurements")
        cls_meas = classification(tr_m, te_m, opts)
        mu, sd = tr_m.features.mean(0), tr_m.features.std(0) + 1e-6
        base = measurement_baseline(dataclasses.replace(tr_m, features=(tr_m.features - mu) / sd),
                                    dataclasses.replace(te_m, features=(te_m.features - mu) / sd))
        cells_found = sum(len(r) for r in results)
        report["backbones"][name] = {"localisation": loc, "classification_embeddings": cls,
                                     "classification_embeddings_unstandardized": cls_raw,
                                     "classification_measurements_probe": cls_meas,
                                     "measurements_logistic_regression": base,
                                     "cells_found": cells_found, "seconds": round(seconds, 1)}
        nr = loc["non_overlapping"]
        print(f"\n== backbone {name} ({model.name}, {model.embed_dim}-d): {cells_found} cells found in "
              f"{seconds:.0f} s")
        print(f"localisation, non-overlapping cells: F1 {nr['f1']:.3f} (precision {nr['precision']:.3f}, recall "
              f"{nr['recall']:.3f}; tp {nr['tp']} fp {nr['fp']} fn {nr['fn']}; per slide {nr['f1_per_slide']})")
        ov = loc["overlapping"]
        print(f"localisation, overlapping cells: recall at IoU >= 0.5 {ov['recall_at_iou_0.5']:.3f} of {ov['cells']}")
        e = loc["nucleus_error_um_non_overlapping"]
        print(f"nucleus centre error (non-overlapping, matched): median {e['median']:.2f} µm, max {e['max']:.2f} µm, "
              f"{100 * e['share_within_3um']:.1f}% within 3 µm")
        e = loc["nucleus_error_um_all_matched"]
        print(f"nucleus centre error (all matched): median {e['median']:.2f} µm, p95 {e['p95']:.2f} µm, "
              f"{100 * e['share_within_3um']:.1f}% within 3 µm")
        print(f"duplicate cells: {loc['duplicates']}")
        c = loc["crop_centre_offset_px"]
        print(f"crop centring, detected nucleus centre ({c['cells']} cells): max {c['max']:.2f} px from the crop "
              f"centre, {100 * c['share_within_4px']:.1f}% within 4 px")
        c = loc["crop_centre_offset_px_truth_non_overlapping"]
        print(f"crop centring, true nucleus centre of matched non-overlapping cells ({c['cells']}): max "
              f"{c['max']:.2f} px, p99 {c['p99']:.2f} px, {100 * c['share_within_4px']:.1f}% within 4 px")
        for title, r in (("linear probe on embeddings (standardised, the default)", cls),
                         ("linear probe on raw embeddings (published recipe)", cls_raw),
                         ("linear probe on measurements (standardised)", cls_meas),
                         ("logistic regression on measurements", base)):
            print(f"{title}: balanced accuracy {r['balanced_accuracy']:.3f} (chance {1 / 6:.3f}), abnormal vs "
                  f"normal AUROC {r['abnormal_auroc']:.3f}")
        print(f"  recall per class (embeddings): " + ", ".join(
            f"{k} {v:.2f}" for k, v in cls["recall_per_class"].items() if v is not None))
        print(f"  train cells {cls['train_cells']}; test cells {cls['test_cells']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
