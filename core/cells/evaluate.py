"""Detected cells against ground-truth cells (a QuPath GeoJSON of cell objects, e.g. a synthetic slide's).

Matching is one-to-one by IoU of the cell outlines (greedy, highest IoU first, as COCO-style detection scoring does).
Ground-truth cells are split into those that overlap no other ground-truth cell, where a detector without learned
shape priors can be asked to be right, and those that overlap another, which are reported separately. A detection
that lies mostly on overlapping ground-truth cells is neither counted for nor against the non-overlapping score
(an "ignore region", as in crowd annotations), so clusters do not pollute the precision of isolated cells.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclasses.dataclass
class TruthCells:
    polygons: list  # shapely Polygons, level-0
    nuclei: list
    names: list[str]  # class names
    overlapping: np.ndarray  # (N,) bool: intersects another ground-truth cell
    colors: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # class name -> [r, g, b]

    def __len__(self) -> int:
        return len(self.polygons)

    @property
    def nucleus_centres(self) -> np.ndarray:
        return np.array([p.centroid.coords[0] for p in self.nuclei]).reshape(-1, 2)

    def within(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Indices of cells whose nucleus centre lies in the level-0 rectangle."""
        c = self.nucleus_centres
        return np.flatnonzero((c[:, 0] >= x0) & (c[:, 0] < x1) & (c[:, 1] >= y0) & (c[:, 1] < y1))


def read_truth(path: str | os.PathLike, min_overlap_px2: float = 1.0) -> TruthCells:
    """Cells of a QuPath GeoJSON (FeatureCollection or bare list) with their nuclei and class names."""
    from shapely import STRtree
    from shapely.geometry import shape

    from ..errors import InputError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read ground-truth cells from {path}: {exc}") from exc
    features = data["features"] if isinstance(data, dict) else data
    polys, nuclei, names, colors = [], [], [], {}
    for f in features:
        if "nucleusGeometry" not in f and "nucleusGeometry" not in f.get("properties", {}):
            continue
        nuc = f.get("nucleusGeometry") or f["properties"]["nucleusGeometry"]
        polys.append(shape(f["geometry"]))
        nuclei.append(shape(nuc))
        cls = (f.get("properties") or {}).get("classification") or {}
        names.append(cls.get("name", ""))
        if cls.get("color") is not None:
            colors.setdefault(cls.get("name", ""), [int(v) for v in cls["color"]])
    overlapping = np.zeros(len(polys), bool)
    if polys:
        tree = STRtree(polys)
        a, b = tree.query(polys, predicate="intersects")
        for i, j in zip(a, b):
            if i != j and polys[i].intersection(polys[j]).area >= min_overlap_px2:
                overlapping[i] = overlapping[j] = True
    return TruthCells(polys, nuclei, names, overlapping, colors)


def truth_for_centres(centres: np.ndarray, truth: TruthCells, max_distance_px: float) -> np.ndarray:
    """For each detected nucleus centre, the ground-truth cell whose nucleus contains it, else the one whose
    nucleus centre is nearest within ``max_distance_px``; -1 when none. This labels every detected cell,
    overlapping ones included, by what lies at the centre of its crop."""
    from shapely import STRtree, points

    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    out = np.full(len(centres), -1, np.int64)
    if not len(centres) or not len(truth):
        return out
    pts = points(centres)
    src, dst = STRtree(truth.nuclei).query(pts, predicate="within")
    out[src] = dst  # a point inside two overlapping nuclei keeps the last; either is right
    rest = np.flatnonzero(out < 0)
    if len(rest):
        from scipy.spatial import cKDTree

        dist, idx = cKDTree(truth.nucleus_centres).query(centres[rest])
        ok = dist <= max_distance_px
        out[rest[ok]] = idx[ok]
    return out


def match_cells(detected: Sequence, truth: Sequence, min_iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy one-to-one matching by IoU >= ``min_iou``: (detection index, truth index, IoU) arrays."""
    from shapely import STRtree

    if not len(detected) or not len(truth):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    tree = STRtree(list(truth))
    d_idx, t_idx = tree.query(list(detected), predicate="intersects")
    pairs = []
    for d, t in zip(d_idx, t_idx):
        inter = detected[d].intersection(truth[t]).area
        union = detected[d].area + truth[t].area - inter
        iou = inter / union if union > 0 else 0.0
        if iou >= min_iou:
            pairs.append((iou, int(d), int(t)))
    pairs.sort(reverse=True)
    used_d, used_t, out = set(), set(), []
    for iou, d, t in pairs:
        if d not in used_d and t not in used_t:
            used_d.add(d)
            used_t.add(t)
            out.append((d, t, iou))
    if not out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    arr = np.array(out)
    return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2]


def localisation_report(cell_polygons: Sequence, nucleus_centres: np.ndarray, truth: TruthCells, mpp: float,
                        min_iou: float = 0.5, ignore_share: float = 0.5) -> dict[str, Any]:
    """F1 at IoU >= ``min_iou`` on non-overlapping ground truth, overlapping cells separately, nucleus errors in µm.

    A detection that does not match a non-overlapping cell is a false positive unless at least ``ignore_share`` of
    its area lies on overlapping ground-truth cells (then it is ignored).
    """
    from shapely import STRtree, union_all

    detected = list(cell_polygons)
    d, t, iou = match_cells(detected, truth.polygons, min_iou)
    solo = ~truth.overlapping
    matched_t = np.zeros(len(truth), bool)
    matched_t[t] = True
    det_match = np.full(len(detected), -1, np.int64)
    det_match[d] = t
    crowd = [p for p, o in zip(truth.polygons, truth.overlapping) if o]
    crowd_tree = STRtree(crowd) if crowd else None
    crowd_union = None

    tp = fp = ignored = 0
    for k, poly in enumerate(detected):
        m = det_match[k]
        if m >= 0 and solo[m]:
            tp += 1
            continue
        if m >= 0:  # matched an overlapping cell: scored in the overlapping report
            ignored += 1
            continue
        share = 0.0
        if crowd_tree is not None and len(crowd_tree.query(poly, predicate="intersects")):
            if crowd_union is None:
                crowd_union = union_all(crowd)
            share = poly.intersection(crowd_union).area / poly.area if poly.area else 0.0
        if share >= ignore_share:
            ignored += 1
        else:
            fp += 1
    fn = int((solo & ~matched_t).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    centres = np.asarray(nucleus_centres, np.float64).reshape(-1, 2)
    err = np.hypot(*(centres[d] - truth.nucleus_centres[t]).T) * mpp if len(d) else np.zeros(0)
    solo_pairs = solo[t] if len(t) else np.zeros(0, bool)
    per_class: dict[str, dict[str, Any]] = {}
    for name in sorted(set(truth.names)):
        cls = np.array([n == name for n in truth.names])
        per_class[name] = {
            "non_overlapping": int((cls & solo).sum()),
            "recall_non_overlapping": _share(matched_t[cls & solo]),
            "overlapping": int((cls & ~solo).sum()),
            "recall_overlapping": _share(matched_t[cls & ~solo]),
        }
    return {
        "truth_cells": len(truth), "truth_non_overlapping": int(solo.sum()),
        "truth_overlapping": int((~solo).sum()), "detected": len(detected),
        "non_overlapping": {"tp": tp, "fp": fp, "fn": fn, "ignored_detections": ignored,
                            "precision": precision, "recall": recall, "f1": f1,
                            "mean_iou": float(iou[solo_pairs].mean()) if solo_pairs.any() else float("nan")},
        "overlapping": {"recall_at_iou": _share(matched_t[~solo]),
                        "mean_iou": float(iou[~solo_pairs].mean()) if (~solo_pairs).any() else float("nan")},
        "nucleus_error_um": {
            "median": float(np.median(err)) if len(err) else float("nan"),
            "p95": float(np.percentile(err, 95)) if len(err) else float("nan"),
            "max": float(err.max()) if len(err) else float("nan"),
            "share_within_3um": _share(err <= 3.0),
        },
        "per_class": per_class,
    }


def _share(flags: np.ndarray) -> float:
    flags = np.asarray(flags, bool)
    return float(flags.mean()) if flags.size else float("nan")


def duplicate_pairs(polygons: Sequence, centres: np.ndarray, min_iou: float = 0.5) -> list[tuple[int, int]]:
    """Pairs of detections that are the same cell twice: outlines overlapping at IoU >= ``min_iou``."""
    from shapely import STRtree

    if len(polygons) < 2:
        return []
    tree = STRtree(list(polygons))
    a, b = tree.query(list(polygons), predicate="intersects")
    out = []
    for i, j in zip(a, b):
        if i < j:
            inter = polygons[i].intersection(polygons[j]).area
            union = polygons[i].area + polygons[j].area - inter
            if union > 0 and inter / union >= min_iou:
                out.append((int(i), int(j)))
    return out
