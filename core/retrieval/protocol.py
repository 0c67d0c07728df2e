"""The published cell-retrieval protocol: centre on the key mean, L2-normalise, exact L2 search.

This is the one implementation: the evaluation recipe (``training.retrieval_eval``), the benchmarks and the exact
path of :class:`core.retrieval.CellIndex` all call these functions, so an atlas query and the published evaluation
rank neighbours identically, bit for bit. After normalisation squared L2 distance is ``2 - 2 cos``, so the ranking
is the cosine ranking; faiss ``IndexFlatL2`` breaks ties by key order, as the published code does.
"""

from __future__ import annotations

import numpy as np

from ..errors import CervixFMError

#: Rows whose centred norm is below this stay (numerically) zero instead of being blown up to unit length.
_MIN_NORM = 1e-12


def centre_and_normalise(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``(x - mean) / ||x - mean||`` per row as contiguous float32; a zero row stays zero."""
    x = np.asarray(x, np.float32) - np.asarray(mean, np.float32).reshape(1, -1)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norm, _MIN_NORM), dtype=np.float32)


def key_mean(keys: np.ndarray) -> np.ndarray:
    """(1, D) float32 mean of the keys, computed as the published code does (numpy float32 mean)."""
    return np.asarray(keys, np.float32).mean(axis=0, keepdims=True)


def prepare_embeddings(keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre both on the key mean, then L2-normalise each row (a zero row stays zero)."""
    keys = np.asarray(keys, np.float32)
    queries = np.asarray(queries, np.float32)
    if keys.ndim != 2 or queries.ndim != 2 or keys.shape[1] != queries.shape[1]:
        raise CervixFMError(f"Key features {keys.shape} and query features {queries.shape} must be (N, D) with one D.")
    mean = key_mean(keys)
    return centre_and_normalise(keys, mean), centre_and_normalise(queries, mean)


def flat_index(normalised_keys: np.ndarray):
    """A faiss ``IndexFlatL2`` holding the (already centred and normalised) keys."""
    import faiss

    index = faiss.IndexFlatL2(normalised_keys.shape[1])
    index.add(np.ascontiguousarray(normalised_keys, dtype=np.float32))
    return index


def exact_search(keys: np.ndarray, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(squared L2 distances, key indices), each (Q, min(k, n_keys)), nearest first; exact search over
    already prepared (centred, normalised) keys and queries."""
    if len(keys) == 0:
        raise CervixFMError("Retrieval needs at least one key (training image).")
    k = min(int(k), len(keys))
    return search_flat(flat_index(keys), queries, k)


def search_flat(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` with the thread count that suits the number of queries (see :mod:`.threads`)."""
    from .threads import faiss_threads

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    with faiss_threads(float(queries.size) * index.ntotal, n_queries=len(queries)):
        return index.search(queries, k)


def evaluate_retrieval(key_features, key_labels, query_features, query_labels, k: int = 10
                       ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """(metrics, neighbour indices (Q, k), distances) of the published protocol: top-1/3/5/10, MV@5, MV@10."""
    from ..metrics import retrieval_metrics

    keys, queries = prepare_embeddings(key_features, query_features)
    distances, indices = exact_search(keys, queries, k)
    metrics = retrieval_metrics(np.asarray(query_labels), np.asarray(key_labels)[indices])
    return metrics, indices, distances
