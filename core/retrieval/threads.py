"""How many OpenMP threads faiss may use for a job, decided per call.

faiss parallelises a search over its queries and k-means over many small parallel regions. With one query, or a
small training set, the second OpenMP thread has nothing to do but spin-wait, and on a busy 2-core machine the
spinning thread steals the core the working one needs. Measured there (load average ~6): exact single-query search
of 50k 1024-d vectors took p50 20-28 ms on one thread against 48-67 ms on two; training a 1,500-vector IVF-PQ took
0.1 s on one thread against 0.5-3.4 s on two. Big batches and big training sets keep faiss's default.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

#: Below this many floats of work (or for searches of fewer than ``FEW_QUERIES`` queries) one thread is used.
SINGLE_THREAD_FLOATS = 2**25
#: faiss switches from per-query SIMD scans to BLAS (which spreads one query's work) at 20 queries.
FEW_QUERIES = 20


@contextlib.contextmanager
def faiss_threads(work_floats: float = 0.0, n_queries: int | None = None) -> Iterator[None]:
    """One OpenMP thread for small jobs and few-query searches, faiss's default otherwise (per calling thread)."""
    import faiss

    before = faiss.omp_get_max_threads()
    single = work_floats < SINGLE_THREAD_FLOATS or (n_queries is not None and n_queries < FEW_QUERIES)
    faiss.omp_set_num_threads(1 if single else before)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
