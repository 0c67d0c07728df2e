"""Similar-cell search at library scale: CellIndex on 1,000,000 clustered 1024-d embeddings.

What it measures, in one run:

- build time of the index (add + save: IVF-PQ training, encoding, self-calibration of nprobe, atomic writes);
- single-query latency p50/p99 of ``CellIndex.search`` (one query at a time, k = 10, exact re-rank included);
- recall@10 against exact search with the published protocol (key-mean centring, L2, ``IndexFlatL2``);
- bytes per vector on disk and in memory (the raw vectors are memory-mapped, not loaded);
- the speed-up over exact single-query search on the same vectors;
- exact single-query latency at 10k/50k/100k vectors (the exact/approximate threshold);
- float16 storage: recall@10 of exact search over float16-rounded vectors against float32 (200k subset);
- with ``--compare`` (default), the candidates the ANN choice was made from, on a 100k subset: IVF-Flat, IVF-SQ8,
  IVF-PQ 8-bit + re-rank, HNSW32, IVF-PQ 4-bit fast-scan + re-rank.

Data: ``N`` vectors in 1,000 clusters: cluster centres N(0, I), points = centre + a 128-d latent Gaussian (scale
0.5-1.5 per cluster) mapped into 1024-d by a fixed random basis + isotropic noise 0.15 + a common offset (so the
centring matters). Queries are 1,000 further points of the same distribution (not stored).

Usage (about 25 minutes with ``--no-compare``, 35 with the comparison, and ~10 GB of memory on the busy 2-core
machine; ``--n`` for a smaller run)::

    .venv/bin/python benchmarks/retrieval.py [--n 1000000] [--no-compare] [--json out.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

DIM = 1024


def clustered(n: int, d: int = DIM, n_clusters: int = 1000, latent: int = 128, noise: float = 0.15,
              seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((latent, d), dtype=np.float32) / np.sqrt(latent)
    centres = rng.standard_normal((n_clusters, d), dtype=np.float32)
    spread = rng.uniform(0.5, 1.5, n_clusters).astype(np.float32)
    offset = 3.0 * rng.standard_normal(d).astype(np.float32)
    out = np.empty((n, d), np.float32)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        c = rng.integers(0, n_clusters, m)
        x = (rng.standard_normal((m, latent), dtype=np.float32) * spread[c, None]) @ basis
        x += centres[c]
        x += noise * rng.standard_normal((m, d), dtype=np.float32)
        x += offset
        out[start:start + m] = x
    return out


def flat_of(x: np.ndarray, mean: np.ndarray):
    """IndexFlatL2 of the protocol-prepared vectors, filled chunk by chunk (no second full-size copy)."""
    import faiss

    from core.retrieval.protocol import centre_and_normalise

    flat = faiss.IndexFlatL2(x.shape[1])
    for start in range(0, len(x), 65_536):
        flat.add(centre_and_normalise(x[start:start + 65_536], mean))
    return flat


def latencies(fn, queries: np.ndarray) -> tuple[np.ndarray, list]:
    out, times = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q[None]))
        times.append(time.perf_counter() - t)
    return np.asarray(times) * 1000.0, out


def pct(ms: np.ndarray) -> str:
    return f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms"


def folder_bytes(folder: Path) -> dict[str, int]:
    sizes = {"vectors": 0, "rows": 0, "ann": 0, "manifest": 0}
    for p in folder.iterdir():
        key = ("vectors" if p.name.endswith(".vectors.npy") else "rows" if p.name.endswith(".rows.npz")
               else "ann" if p.name.endswith(".faiss") else "manifest")
        sizes[key] += p.stat().st_size
    return sizes


def exact_curve(x: np.ndarray, queries: np.ndarray, sizes=(10_000, 50_000, 100_000)) -> dict[int, float]:
    from core.retrieval.protocol import centre_and_normalise, key_mean, search_flat

    out = {}
    for n in sizes:
        if n > len(x):
            continue
        mean = key_mean(x[:n])
        flat = flat_of(x[:n], mean)
        ms, _ = latencies(lambda q: search_flat(flat, centre_and_normalise(q, mean), 10), queries[:50])
        out[n] = float(np.percentile(ms, 50))
        print(f"  exact, {n:>7,} vectors: {pct(ms)}", flush=True)
    return out


def float16_recall(x: np.ndarray, queries: np.ndarray) -> float:
    from core.retrieval.ann import neighbour_recall
    from core.retrieval.protocol import evaluate_retrieval

    labels = np.zeros(len(x), int)
    _, truth, _ = evaluate_retrieval(x, labels, queries, np.zeros(len(queries), int))
    _, found, _ = evaluate_retrieval(x.astype(np.float16).astype(np.float32), labels, queries,
                                     np.zeros(len(queries), int))
    return neighbour_recall(found, truth)


def compare_candidates(x: np.ndarray, queries: np.ndarray) -> list[dict]:
    """The structures the choice was made from, on a subset, each with an exact re-rank of 100 candidates where its
    codes are lossy (as CellIndex does)."""
    import faiss

    from core.retrieval.ann import neighbour_recall
    from core.retrieval.threads import faiss_threads
    from core.retrieval.protocol import centre_and_normalise, key_mean

    mean = key_mean(x)
    xn = np.concatenate([centre_and_normalise(x[s:s + 65_536], mean) for s in range(0, len(x), 65_536)])
    qn = centre_and_normalise(queries, mean)
    truth = faiss.IndexFlatL2(DIM)
    truth.add(xn)
    _, want = truth.search(qn, 10)
    del truth
    nlist = int(2 ** round(np.log2(np.sqrt(len(x)))))
    rows = []
    for spec, param, values, rerank in (
        (f"IVF{nlist},Flat", "nprobe", (16, 32), False),
        (f"IVF{nlist},SQ8", "nprobe", (16, 32), True),
        (f"IVF{nlist},PQ64", "nprobe", (16, 32), True),
        ("HNSW32", "efSearch", (64, 128), False),
        (f"IVF{nlist},PQ128x4fs", "nprobe", (16, 32), True),
    ):
        index = faiss.index_factory(DIM, spec)
        t = time.perf_counter()
        if "IVF" in spec:
            ivf = faiss.extract_index_ivf(index)
            ivf.cp.niter, ivf.cp.max_points_per_centroid = 10, 64
            index.train(xn[np.random.default_rng(0).choice(len(xn), min(len(xn), 64 * nlist), replace=False)])
        index.add(xn)
        build = time.perf_counter() - t
        for value in values:
            if param == "nprobe":
                faiss.extract_index_ivf(index).nprobe = value
            else:
                index.hnsw.efSearch = value

            def one(q, index=index, rerank=rerank):
                with faiss_threads(n_queries=1):
                    _, ids = index.search(q, 100 if rerank else 10)
                if not rerank:
                    return ids[0]
                cand = ids[0][ids[0] >= 0]
                d = np.square(xn[cand] - q[0]).sum(axis=1)
                return cand[np.argsort(d, kind="stable")[:10]]

            ms, found = latencies(one, qn[:300])
            recall = neighbour_recall(np.asarray(found), want[:300])
            code = {"Flat": DIM * 4, "SQ8": DIM, "PQ64": 64, "PQ128x4fs": 64}.get(spec.split(",")[-1], DIM * 4 + 256)
            rows.append({"index": spec, param: value, "rerank": rerank, "build_s": build, "p50_ms": np.percentile(ms, 50),
                         "p99_ms": np.percentile(ms, 99), "recall10": recall, "code_bytes": code})
            print(f"  {spec:<22} {param} {value:>4}{' + re-rank 100' if rerank else '':<14} build {build:6.1f} s, "
                  f"{pct(ms)}, recall@10 {recall:.3f}, {code} bytes/vector in the index", flush=True)
        del index
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="stored vectors (default 1,000,000)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--no-compare", action="store_true", help="skip the ANN candidate comparison")
    parser.add_argument("--compare-n", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, help="where the index is written (default: a temporary folder)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, help="faiss OpenMP threads for big jobs (default: faiss's choice)")
    args = parser.parse_args(argv)

    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    from core.retrieval import CellIndex, RowTable
    from core.retrieval.ann import neighbour_recall
    from core.retrieval.protocol import centre_and_normalise, key_mean, search_flat

    report: dict = {"n": args.n, "dim": DIM, "queries": args.queries, "cpu_threads": os.cpu_count(),
                    "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
                    "load_average_start": os.getloadavg()}
    t = time.perf_counter()
    data = clustered(args.n + args.queries)
    x, queries = data[:args.n], data[args.n:]
    print(f"data: {args.n:,} x {DIM} float32 clustered vectors + {args.queries} held-out queries "
          f"({time.perf_counter() - t:.0f} s to generate); {os.cpu_count()} CPU cores, faiss {faiss.__version__}",
          flush=True)

    if not args.no_compare:
        print(f"\nANN candidates on the first {args.compare_n:,} vectors (single queries, k = 10):", flush=True)
        report["compare"] = compare_candidates(x[:args.compare_n], queries)
    print("\nexact single-query latency (IndexFlatL2, published protocol) by size:", flush=True)
    report["exact_curve_p50_ms"] = exact_curve(x, queries)
    report["float16_recall10_200k"] = float16_recall(x[:200_000], queries[:300])
    print(f"\nfloat16 storage: recall@10 {report['float16_recall10_200k']:.4f} against float32 exact search (first "
          f"200,000 vectors, 300 queries)", flush=True)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="cervixfm-retrieval-"))
    folder = work / "index"
    if folder.exists():
        shutil.rmtree(folder)
    rows = RowTable.from_columns(source="cell", slide=[f"slide{i:03d}.svs" for i in range(100)] * (args.n // 100)
                                 + [f"slide{i:03d}.svs" for i in range(args.n % 100)],
                                 boxes=np.column_stack([np.arange(args.n) % 90_000, np.arange(args.n) // 90_000,
                                                        np.full(args.n, 64), np.full(args.n, 64)]))
    print(f"\nbuilding CellIndex in {folder} ...", flush=True)
    t = time.perf_counter()
    index = CellIndex.create(folder, DIM)
    index.add(x, rows)
    index.save()
    build = time.perf_counter() - t
    settings = index.ann_settings
    print(f"  build {build:.0f} s: {index.mode} search, IVF{settings.nlist},PQ{settings.pq_m}x4fs, nprobe "
          f"{settings.nprobe} (self-calibrated, recall@10 {settings.measured_recall:.3f} on stored vectors), "
          f"{settings.candidates} candidates re-ranked", flush=True)
    index = CellIndex.open(folder)  # as a user would: reopened from disk, vectors memory-mapped
    sizes = folder_bytes(folder)
    mean = key_mean(x)
    flat = flat_of(x, mean)
    del data, x
    qn = centre_and_normalise(queries, mean)
    t = time.perf_counter()
    _, truth = flat.search(qn, 10)
    print(f"  ground truth: exact search of {len(queries)} queries in {time.perf_counter() - t:.0f} s", flush=True)
    exact_ms, _ = latencies(lambda q: search_flat(flat, centre_and_normalise(q, mean), 10), queries[:20])
    del flat  # 4 GB the page cache needs for the memory-mapped raw vectors the re-rank reads
    gc.collect()
    t = time.perf_counter()
    touched = sum(float(chunk[:, 0].sum()) for _, chunk in index.iter_vectors())  # a long-running viewer's state
    print(f"  page cache warmed: raw vectors read once in {time.perf_counter() - t:.0f} s ({touched:.0f})", flush=True)
    index.search(queries[:5], 10)  # touch the code paths once
    ann_ms, found = latencies(lambda q: index.search(q, 10).ids[0], queries)
    recall = neighbour_recall(np.asarray(found), truth)
    ann_ram = len(index._ann.to_bytes()) / args.n
    rows_ram = sizes["rows"] / args.n
    report.update({
        "build_s": build, "settings": settings.to_dict(), "p50_ms": float(np.percentile(ann_ms, 50)),
        "p90_ms": float(np.percentile(ann_ms, 90)), "p99_ms": float(np.percentile(ann_ms, 99)), "recall10": recall,
        "exact_p50_ms": float(np.percentile(exact_ms, 50)), "exact_p99_ms": float(np.percentile(exact_ms, 99)),
        "speedup_p50": float(np.percentile(exact_ms, 50) / np.percentile(ann_ms, 50)),
        "disk_bytes_per_vector": {k: v / args.n for k, v in sizes.items()},
        "ram_bytes_per_vector": {"ann": ann_ram, "metadata": rows_ram, "ids": 8.0},
    })
    disk = report["disk_bytes_per_vector"]
    report["load_average_end"] = os.getloadavg()
    print(f"\nRESULT ({args.n:,} x {DIM}-d, {len(queries)} single queries, k = 10, one query at a time; faiss threads "
          f"{report['faiss_threads']} for big jobs, 1 for single queries; load average "
          f"{report['load_average_start'][0]:.1f} at start, {report['load_average_end'][0]:.1f} at end):")
    print(f"  build time            {build:.0f} s (add + train + encode + calibrate + write)")
    print(f"  latency               {pct(ann_ms)}, p90 {np.percentile(ann_ms, 90):.2f} ms   (target p50 <= 5 ms)")
    print(f"  recall@10             {recall:.4f} against exact search   (target >= 0.95)")
    print(f"  exact search          {pct(exact_ms)} (IndexFlatL2, 20 queries)")
    print(f"  speed-up over exact   {report['speedup_p50']:.0f}x at p50")
    print(f"  bytes per vector      disk {sum(disk.values()):.0f} = raw float32 {disk['vectors']:.0f} + IVF-PQ "
          f"{disk['ann']:.1f} + metadata {disk['rows']:.1f}; memory {ann_ram + rows_ram + 8:.0f} resident "
          f"(IVF-PQ {ann_ram:.1f} + metadata {rows_ram:.1f} + id 8), raw vectors memory-mapped")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
