"""Annotation store and GeoJSON speed, measured in one run against naive baselines measured in the same run.

1. Store: build (constructing the objects, bulk add, first query builds the index) for 100,000 cell-like polygons
   (49-vertex outlines, like the synthetic ground truth) and 1,000,000 boxes, spread over a 100,000 x 100,000 px
   slide (cells: ~10 per 1000 x 1000 px; boxes: ~100).
2. Query latency p50/p99 for viewport rectangles the viewer asks for (a 1920 x 1080 screen at downsample 1, 4
   and 16), exact and bounding-box-only, and hit-test latency (5 px tolerance), against a brute-force NumPy
   bounding-box scan (the baseline a spatial index must beat; it is also less exact).
3. Drawing: 1,000 objects added one at a time onto the 100k store, each followed by a viewport query (what a
   view does after each new annotation): p50/p99 of add+query, so incremental index maintenance never stalls.
4. GeoJSON throughput for the 100k cells with nuclei: ``write_geojson`` and ``read_geojson`` objects/s and MB/s,
   against the straightforward per-feature way (``json.dumps(mapping(geom))`` / ``shapely.geometry.shape``).

Usage: .venv/bin/python benchmarks/annotations.py [--cells 100000] [--boxes 1000000] [--workdir DIR]
Prints one JSON line per measurement and a summary table. Timings are wall-clock on a shared machine: noisy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import shapely  # noqa: E402

from core.annotations import Annotation, AnnotationStore, classification, read_geojson, write_geojson  # noqa: E402

SIDE = 100_000
SCREEN = (1920, 1080)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))  # ms


def make_cells(n: int, seed: int = 0) -> list[Annotation]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(50, SIDE - 50, (n, 2))
    radius = rng.uniform(12, 40, n)
    outlines = shapely.buffer(shapely.points(xy), radius, quad_segs=12)
    nuclei = shapely.buffer(shapely.points(xy), radius * 0.3, quad_segs=8)
    classes = [classification(c) for c in ("NILM", "LSIL", "HSIL", "ASC-US")]
    labels = rng.integers(0, 4, n)
    scores = rng.uniform(0, 1, n)
    return [Annotation(g, "cell", classes[k], nucleus=nu, score=s, source="model:bench",
                       measurements={"Area": float(a)})
            for g, nu, k, s, a in zip(outlines, nuclei, labels.tolist(), scores.tolist(),
                                      shapely.area(outlines).tolist())]


def make_boxes(n: int, seed: int = 1) -> list[Annotation]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, SIDE - 60, (n, 2))
    wh = rng.uniform(10, 60, (n, 2))
    geoms = shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + wh[:, 0], xy[:, 1] + wh[:, 1])
    cls = classification("HSIL")
    return [Annotation(g, "detection", cls, source="model:bench") for g in geoms]


def bench_store(name: str, make, n: int, rng: np.random.Generator) -> tuple[dict, AnnotationStore]:
    t0 = time.perf_counter()
    objs = make(n)
    t1 = time.perf_counter()
    store = AnnotationStore()
    store.add(objs, undoable=False)
    t2 = time.perf_counter()
    store.query((0, 0, 10, 10))  # STRtree builds lazily on its first query
    t3 = time.perf_counter()
    bounds = shapely.bounds(np.array([a.geometry for a in objs], dtype=object))
    out = {"what": "store", "objects": name, "n": n, "create_s": round(t1 - t0, 3), "add_s": round(t2 - t1, 3),
           "first_query_index_build_s": round(t3 - t2, 3)}

    for ds in (1, 4, 16):
        w, h = SCREEN[0] * ds, SCREEN[1] * ds
        rects = [(x, y, x + w, y + h) for x, y in rng.uniform(0, SIDE - max(w, h), (200, 2))]
        for exact in (True, False):
            lat, found = [], []
            for r in rects:
                t = time.perf_counter()
                found.append(len(store.query(r, exact=exact)))
                lat.append(time.perf_counter() - t)
            out[f"query_ds{ds}_{'exact' if exact else 'bbox'}_p50_ms"] = round(_pct(lat, 50), 3)
            out[f"query_ds{ds}_{'exact' if exact else 'bbox'}_p99_ms"] = round(_pct(lat, 99), 3)
        out[f"query_ds{ds}_mean_hits"] = round(statistics.mean(found), 1)
        lat = []
        for r in rects:
            t = time.perf_counter()
            store.query_boxes(r)
            lat.append(time.perf_counter() - t)
        out[f"query_ds{ds}_arrays_p50_ms"] = round(_pct(lat, 50), 3)
        out[f"query_ds{ds}_arrays_p99_ms"] = round(_pct(lat, 99), 3)
        base = []
        for r in rects[:50]:
            t = time.perf_counter()
            m = (bounds[:, 0] <= r[2]) & (bounds[:, 2] >= r[0]) & (bounds[:, 1] <= r[3]) & (bounds[:, 3] >= r[1])
            _ = [objs[i] for i in np.flatnonzero(m)]
            base.append(time.perf_counter() - t)
        out[f"query_ds{ds}_bruteforce_p50_ms"] = round(_pct(base, 50), 3)
        out[f"query_ds{ds}_speedup_vs_bruteforce"] = round(_pct(base, 50) / max(
            out[f"query_ds{ds}_exact_p50_ms"], 1e-6), 1)

    pts = [objs[i].geometry.centroid.coords[0] for i in rng.integers(0, n, 500)]
    lat = []
    for x, y in pts:
        t = time.perf_counter()
        hits = store.hit_test(x, y, tolerance=5.0)
        lat.append(time.perf_counter() - t)
        assert hits, "a centroid must hit its object"
    base = []
    for x, y in pts[:50]:
        t = time.perf_counter()
        m = (bounds[:, 0] <= x + 5) & (bounds[:, 2] >= x - 5) & (bounds[:, 1] <= y + 5) & (bounds[:, 3] >= y - 5)
        idx = np.flatnonzero(m)
        _ = shapely.distance(np.array([objs[i].geometry for i in idx], dtype=object), shapely.Point(x, y))
        base.append(time.perf_counter() - t)
    out.update({"hit_test_p50_ms": round(_pct(lat, 50), 3), "hit_test_p99_ms": round(_pct(lat, 99), 3),
                "hit_test_bruteforce_p50_ms": round(_pct(base, 50), 3)})
    return out, store


def bench_drawing(store: AnnotationStore, rng: np.random.Generator, n: int = 1000) -> dict:
    lat = []
    w, h = SCREEN
    for i in range(n):
        x, y = rng.uniform(0, SIDE - w, 2)
        a = Annotation(shapely.box(x + 100, y + 100, x + 300, y + 250), classification="Region*")
        t = time.perf_counter()
        store.add(a)
        got = store.query((x, y, x + w, y + h))
        lat.append(time.perf_counter() - t)
        assert any(o.id == a.id for o in got)
    undo = []
    for _ in range(100):
        t = time.perf_counter()
        store.undo()
        undo.append(time.perf_counter() - t)
    return {"what": "drawing", "store_size": len(store), "adds": n, "add_then_query_p50_ms": round(_pct(lat, 50), 3),
            "add_then_query_p99_ms": round(_pct(lat, 99), 3), "add_then_query_max_ms": round(max(lat) * 1000, 3),
            "undo_p50_ms": round(_pct(undo, 50), 3), "index_chunks": store._index.chunk_sizes[:12]}


def bench_geojson(cells: list[Annotation], workdir: Path) -> dict:
    """write/read throughput; the baseline does the same job the straightforward way (one ``mapping`` +
    ``json.dumps`` per feature to write; ``json.load`` + one ``shape`` per geometry + the object to read)."""
    from shapely.geometry import mapping, shape

    from core.annotations.geojson import annotation_properties

    n = len(cells)
    out: dict = {"what": "geojson", "n": n}
    for label, precision in (("exact", None), ("2dp", 2)):
        path = workdir / f"cells-{label}.geojson"
        t = time.perf_counter()
        write_geojson(path, cells, precision=precision)
        write_s = time.perf_counter() - t
        mb = path.stat().st_size / 1e6
        t = time.perf_counter()
        back = read_geojson(path)
        read_s = time.perf_counter() - t
        assert len(back.annotations) == n and not back.warnings
        if precision is None:
            assert back.annotations[123].geometry.equals_exact(cells[123].geometry, 0.0)
        t = time.perf_counter()
        with open(path, encoding="utf-8") as fh:
            json.load(fh)
        parse_s = time.perf_counter() - t
        out.update({f"{label}_file_mb": round(mb, 1), f"{label}_write_s": round(write_s, 2),
                    f"{label}_write_objects_per_s": round(n / write_s), f"{label}_read_s": round(read_s, 2),
                    f"{label}_read_objects_per_s": round(n / read_s), f"{label}_read_mb_per_s": round(mb / read_s, 1),
                    f"{label}_json_parse_only_s": round(parse_s, 2)})

    sample = cells[: max(1, n // 10)]  # baseline on a 10% sample, scaled
    t = time.perf_counter()
    texts = [json.dumps({"type": "Feature", "id": a.id, "geometry": mapping(a.geometry),
                         "nucleusGeometry": mapping(a.nucleus), "properties": annotation_properties(a)})
             for a in sample]
    base_write = (time.perf_counter() - t) * n / len(sample)
    t = time.perf_counter()
    feats = json.loads("[" + ",".join(texts) + "]")
    for f in feats:
        p = f["properties"]
        Annotation(shape(f["geometry"]), p["objectType"], classification(p["classification"]["name"]),
                   nucleus=shape(f["nucleusGeometry"]), measurements=p.get("measurements", {}), id=f["id"])
    base_read = (time.perf_counter() - t) * n / len(sample)
    out.update({"baseline_write_s": round(base_write, 2), "baseline_read_s": round(base_read, 2),
                "write_speedup": round(base_write / out["exact_write_s"], 2),
                "read_speedup": round(base_read / out["exact_read_s"], 2)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--boxes", type=int, default=1_000_000)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cervixfm-annbench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    results = []
    try:
        cells_res, cell_store = bench_store("cells", make_cells, args.cells, rng)
        results.append(cells_res)
        print(json.dumps(cells_res), flush=True)
        draw = bench_drawing(cell_store, rng)
        results.append(draw)
        print(json.dumps(draw), flush=True)
        geo = bench_geojson(cell_store.select(types="cell"), workdir)
        results.append(geo)
        print(json.dumps(geo), flush=True)
        del cell_store
        if args.boxes:
            box_res, _ = bench_store("boxes", make_boxes, args.boxes, rng)
            results.append(box_res)
            print(json.dumps(box_res), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    print("\nsummary (ms unless noted; p50 / p99)")
    for r in results:
        if r["what"] == "store":
            print(f"  {r['objects']:>5} n={r['n']:,}: create {r['create_s']} s, add {r['add_s']} s, "
                  f"index build {r['first_query_index_build_s']} s")
            for ds in (1, 4, 16):
                print(f"      viewport ds{ds:<2} exact {r[f'query_ds{ds}_exact_p50_ms']} / "
                      f"{r[f'query_ds{ds}_exact_p99_ms']}, bbox {r[f'query_ds{ds}_bbox_p50_ms']} / "
                      f"{r[f'query_ds{ds}_bbox_p99_ms']}, arrays {r[f'query_ds{ds}_arrays_p50_ms']} / "
                      f"{r[f'query_ds{ds}_arrays_p99_ms']}  (~{r[f'query_ds{ds}_mean_hits']:.0f} hits; brute force "
                      f"{r[f'query_ds{ds}_bruteforce_p50_ms']}, x{r[f'query_ds{ds}_speedup_vs_bruteforce']})")
            print(f"      hit test {r['hit_test_p50_ms']} / {r['hit_test_p99_ms']} "
                  f"(brute force {r['hit_test_bruteforce_p50_ms']})")
        elif r["what"] == "drawing":
            print(f"  drawing on {r['store_size']:,}: add+query {r['add_then_query_p50_ms']} / "
                  f"{r['add_then_query_p99_ms']} (max {r['add_then_query_max_ms']}), undo {r['undo_p50_ms']}")
        else:
            for label in ("exact", "2dp"):
                print(f"  geojson {r['n']:,} cells, {label} coordinates ({r[label + '_file_mb']} MB): write "
                      f"{r[label + '_write_s']} s ({r[label + '_write_objects_per_s']:,}/s), read "
                      f"{r[label + '_read_s']} s ({r[label + '_read_objects_per_s']:,}/s; a plain json.load of the "
                      f"file alone, collector on: {r[label + '_json_parse_only_s']} s)")
            print(f"      vs per-feature baseline: write x{r['write_speedup']}, read x{r['read_speedup']}")


if __name__ == "__main__":
    main()
