"""Approximate nearest-neighbour search for large cell indexes: IVF + 4-bit PQ fast-scan, then an exact re-rank.

Why this structure. Measured with ``benchmarks/retrieval.py`` on this project's 2-core CPU machine (shared: load
average 8-12 during the runs, so absolute times are pessimistic), 1024-d clustered vectors, one query at a time,
k = 10, recall@10 against exact search with the published protocol:

- Exact search (faiss ``IndexFlatL2``, one thread) p50 in two runs: 6.5-6.9 ms at 10k vectors, 23-34 ms at 50k,
  26-60 ms at 100k, 352-474 ms at 1M. It is the published protocol bit for bit and costs nothing to build.
- The candidates, on a 100k subset (nlist 256; recall 0.886 at nprobe 16 and 0.991 at 32 for every IVF variant,
  i.e. the lists, not the codes, limited recall there):

  ====================================  ========  ===============  =====================  ============
  index (re-rank of 100 where lossy)    build     p50 @ nprobe 32  memory per vector      removal
  ====================================  ========  ===============  =====================  ============
  IVF-Flat                              7.5 s     24 ms            4096 B                 yes
  IVF-SQ8 + re-rank                     7.0 s     11.7 ms          1024 B (+ raw store)   yes
  IVF-PQ64x8 + re-rank                  356 s     6.0 ms           64 B (+ raw store)     yes
  HNSW32-Flat (efSearch 64 / 128)       114 s     0.45 / 1.0 ms    4352 B (a 2nd copy)    no
  **IVF-PQ128x4 fast-scan + re-rank**   24 s      **0.32 ms**      **64 B** (+ raw store)  yes
  ====================================  ========  ===============  =====================  ============

  HNSW answers fast but costs a second full copy of every vector, 4-5x the build time on 2 cores (100k took 26 s
  on a quiet machine, 114 s under load; extrapolated, not measured, 1M would take ~5-25 min), and faiss cannot
  remove from it (removing a slide = a full rebuild). 8-bit PQ trains 15x slower than 4-bit fast-scan for no gain
  once the candidates are re-ranked. IVF + 4-bit PQ fast-scan is the choice.
- PQ codes alone rank poorly (recall@10 0.6-0.7 on their own); every candidate list is re-ranked exactly against the
  stored raw vectors centred on the *current* key mean, so the final order is the published protocol's whenever the
  true neighbours are among the candidates. The IVF index itself keeps the mean it was built with.
- Neither ``nprobe`` nor the number of candidates is guessed: after each build the index measures its own
  recall@10 against exact search (256 stored vectors as queries) and keeps the cheapest setting reaching
  :data:`TARGET_RECALL` (:func:`calibrate`). At 1M the lists were never the limit (8 probes held 99.9 % of the true
  neighbours) but the codes were: 100 / 200 / 400 candidates gave recall 0.92 / 0.98 / 0.999; the calibration chose
  nprobe 8 with 200 candidates: held-out recall@10 0.980, single-query p50 1.4 ms, 347x faster than exact.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from .threads import faiss_threads

#: Exact search below this many vectors, approximate above. Exact single-query latency grows linearly with the
#: count (measured p50 6.5-6.9 ms at 10k, 23-34 ms at 50k, 352-474 ms at 1M), so up to 50k an exact query stays near 30 ms,
#: instant for a click, with no build cost, no approximation and the published numbers bit for bit; an approximate
#: index pays ~10-25 s of training and calibration at that size and answers in ~1 ms. Past 50k exact latency heads
#: for what a viewer cannot afford (hundreds of ms), while a single slide's cells alone can exceed 50k.
EXACT_LIMIT = 50_000

#: Recall@10 the self-calibration aims at, measured on stored vectors as queries (the acceptance bar is 0.95; the
#: margin covers queries unlike the stored vectors: at 1M, 0.98 on stored vectors was 0.98 on held-out queries).
TARGET_RECALL = 0.97
#: nprobe values tried, from 8: fewer saves little (a list holds ~sqrt(N) codes, scanned in microseconds) and makes
#: recall fragile for queries unlike the stored vectors.
NPROBE_STEPS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
#: Candidates re-ranked exactly per query (at least 5 x k); the calibration raises it when the PQ codes need it.
#: At 100k vectors 100 candidates recovered recall@10 0.999 from PQ codes with recall 0.6-0.7 on their own; at 1M
#: (denser neighbourhoods) 100/200/400 candidates gave 0.92/0.98/0.999.
DEFAULT_CANDIDATES = 100
CANDIDATE_STEPS = (DEFAULT_CANDIDATES, 200, 400, 800)
#: Rebuild (retrain) when the stored count has doubled or halved since training, or when the key mean moved by more
#: than this share of the RMS distance of the vectors from their mean (``drift``): the coarse centroids and PQ
#: codebooks were fitted to the old distribution. Measured (128-d clustered vectors, 20k stored, then a second
#: population added without retraining, recall@10 of queries from that population): at drift 0.06-0.11 the stale
#: index did as well as a rebuilt one (0.75-0.78 vs 0.65-0.75); at 0.27 it lost 6 points (0.83 vs 0.89), at 0.53
#: 17 points (0.80 vs 0.96), at 0.77 22 points (0.77 vs 0.99).
DRIFT_LIMIT = 0.1
GROWTH_LIMIT = 2.0
CALIBRATION_QUERIES = 256


@dataclasses.dataclass
class AnnSettings:
    nlist: int
    pq_m: int  # PQ sub-quantisers of 4 bits each: pq_m / 2 bytes per vector
    nprobe: int
    candidates: int = DEFAULT_CANDIDATES
    measured_recall: float | None = None  # recall@10 of the calibration, for the record

    @property
    def factory(self) -> str:
        return f"IVF{self.nlist},PQ{self.pq_m}x4fs" if self.pq_m else f"IVF{self.nlist},Flat"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AnnSettings":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def pq_subquantizers(dim: int) -> int:
    """4-bit sub-quantisers: one per 8 dimensions (64 bytes for 1024-d), but at least ~32 so small embeddings keep
    enough code bits to rank candidates (a 64-d index with 8 sub-quantisers reached only recall 0.88 even probing
    every list). Fast-scan needs an even count dividing ``dim``; 0 = none fits, use IVF-Flat."""
    want = max(dim // 8, min(32, dim // 2))
    for m in range(want, 1, -1):
        if dim % m == 0 and m % 2 == 0:
            return m
    return 0


def choose_settings(n: int, dim: int) -> AnnSettings:
    """About sqrt(n) lists (a power of two): k-means on 2 cores stays cheap and each list holds ~sqrt(n) codes,
    which fast-scan reads in microseconds."""
    nlist = int(2 ** round(math.log2(max(1.0, math.sqrt(n)))))
    nlist = int(min(max(nlist, 16), 8192, max(16, n // 39)))  # faiss wants ~39 training points per centroid
    return AnnSettings(nlist=nlist, pq_m=pq_subquantizers(dim), nprobe=min(32, nlist))


def training_size(settings: AnnSettings, n: int) -> int:
    return int(min(n, max(64 * settings.nlist, 20_000)))


class AnnIndex:
    """The faiss part of a large cell index: ids of candidate neighbours; the caller re-ranks them exactly."""

    def __init__(self, index, settings: AnnSettings, mean: np.ndarray, built_count: int):
        self.index = index
        self.settings = settings
        self.mean = np.asarray(mean, np.float32).reshape(1, -1)
        self.built_count = int(built_count)
        self._set_nprobe(settings.nprobe)

    @classmethod
    def train(cls, sample: np.ndarray, settings: AnnSettings, mean: np.ndarray, built_count: int) -> "AnnIndex":
        """A trained, empty index; ``sample`` = centred, normalised vectors."""
        import faiss

        index = faiss.index_factory(sample.shape[1], settings.factory)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = 10  # faiss default 25: halves training time, and the recall is measured afterwards anyway
        ivf.cp.max_points_per_centroid = 64
        ivf.cp.seed = 1234
        with faiss_threads(sample.size * max(1, settings.nlist // 16)):
            index.train(np.ascontiguousarray(sample, np.float32))
        return cls(index, settings, mean, built_count)

    def _set_nprobe(self, nprobe: int) -> None:
        import faiss

        faiss.extract_index_ivf(self.index).nprobe = int(min(nprobe, self.settings.nlist))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, normalised: np.ndarray, ids: np.ndarray) -> None:
        with faiss_threads(normalised.size * max(1, self.settings.nlist // 16)):
            self.index.add_with_ids(np.ascontiguousarray(normalised, np.float32), np.asarray(ids, np.int64))

    def remove(self, ids: np.ndarray) -> int:
        import faiss

        ids = np.ascontiguousarray(ids, np.int64)
        return int(self.index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids)))) if len(ids) else 0

    def candidates(self, queries: np.ndarray, n: int, nprobe: int | None = None) -> np.ndarray:
        """(Q, n) ids of candidate neighbours (centred with :attr:`mean`, normalised); -1 pads short lists."""
        if nprobe is not None:
            self._set_nprobe(nprobe)
        try:
            with faiss_threads(len(queries) * self.settings.nprobe * len(self) / self.settings.nlist * self.settings.pq_m,
                               n_queries=len(queries)):
                _, ids = self.index.search(np.ascontiguousarray(queries, np.float32), int(n))
        finally:
            if nprobe is not None:
                self._set_nprobe(self.settings.nprobe)
        return ids

    def to_bytes(self) -> bytes:
        import faiss

        return faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, settings: AnnSettings, mean: np.ndarray, built_count: int,
                   source: str = "index file") -> "AnnIndex":
        import faiss

        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise InputError(f"{source} is not a readable faiss index ({str(exc).splitlines()[0][:200]}). Rebuild the "
                             "index with `cervixfm index rebuild`.") from exc
        return cls(index, settings, mean, built_count)


def neighbour_recall(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean share of each query's true ``k`` nearest ids that ``found`` (first k columns) contains."""
    found, truth = np.asarray(found)[:, :k], np.asarray(truth)[:, :k]
    if len(truth) == 0:
        return float("nan")
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / max(1, len(t)) for f, t in zip(found, truth)]))


def calibrate(search_at: Callable[[int, int], np.ndarray], truth: np.ndarray, nlist: int,
              target: float = TARGET_RECALL, k: int = 10) -> tuple[int, int, float]:
    """(nprobe, candidates, recall@k): the cheapest setting whose final (re-ranked) results reach ``target``.

    ``search_at(nprobe, candidates)`` returns the ids found. Two limits act independently: lists not probed (fixed
    by ``nprobe``) and PQ codes too coarse to put the true neighbours among the candidates (fixed by re-ranking
    more). So: the smallest ``nprobe`` that reaches the target with the most candidates, then the fewest candidates
    that still reach it at that ``nprobe``. (At 1M vectors the lists were never the limit, 8 probes covered 99.9 %
    of the true neighbours, while 100/200/400 candidates gave recall 0.92/0.98/0.999.)
    """
    probes = [p for p in NPROBE_STEPS if p < nlist] + [nlist]
    most = CANDIDATE_STEPS[-1]
    nprobe, recall = probes[-1], 0.0
    for p in probes:
        nprobe, recall = p, neighbour_recall(search_at(p, most), truth, k)
        if recall >= target:
            break
    if recall < target:
        return nprobe, most, recall
    for candidates in CANDIDATE_STEPS[:-1]:
        fewer = neighbour_recall(search_at(nprobe, candidates), truth, k)
        if fewer >= target:
            return nprobe, candidates, fewer
    return nprobe, most, recall


def needs_rebuild(ann: AnnIndex, count: int, current_mean: np.ndarray, rms_radius: float) -> str | None:
    """Why the approximate index should be retrained now, or None."""
    if count > GROWTH_LIMIT * ann.built_count:
        return f"grown from {ann.built_count:,} to {count:,} vectors"
    if count * GROWTH_LIMIT < ann.built_count:
        return f"shrunk from {ann.built_count:,} to {count:,} vectors"
    drift = float(np.linalg.norm(np.asarray(current_mean, np.float64).ravel() - ann.mean.astype(np.float64).ravel()))
    if rms_radius > 0 and drift > DRIFT_LIMIT * rms_radius:
        return f"key mean moved by {drift / rms_radius:.2f} of the data's spread"
    return None
