"""A key set searched in memory: the open slide's cell embeddings, queried while a pathologist clicks on cells.

The published protocol centres keys on their mean and L2-normalises them before an exact L2 search. Done literally
(``protocol.exact_search``) that copies the keys twice (the normalised copy and faiss's own), which for a slide's
100,000 x 1024 embeddings is 800 MB on top of the table the viewer already holds. ``KeySet`` keeps a reference to
the raw vectors and only the per-key norms, and computes the same squared distance
``|k^|^2 + |q^|^2 - 2 k^.q^`` chunk by chunk, so a query costs one pass over the embeddings and a few MB. The
ranking is the protocol's (ties by key order); distances agree with it to float32 rounding.
"""

from __future__ import annotations

import numpy as np

from ..errors import CervixFMError, InputError
from .protocol import _MIN_NORM, centre_and_normalise, key_mean

CHUNK_ROWS = 8192  # rows centred at a time: 32 MB of float32 at 1024-d


class KeySet:
    def __init__(self, vectors: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> None:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise InputError(f"A key set needs (N, D) embeddings with N >= 1, got shape {vectors.shape}.")
        self.vectors = vectors
        self.chunk_rows = int(chunk_rows)
        self.mean = key_mean(vectors)  # (1, D) float32, as the protocol computes it
        norms = np.empty(len(vectors), np.float32)
        for start in range(0, len(vectors), self.chunk_rows):
            centred = np.asarray(vectors[start:start + self.chunk_rows], np.float32) - self.mean
            norms[start:start + len(centred)] = np.linalg.norm(centred, axis=1)
        #: 1 / |k - mean|, and 0 for keys at the mean (the protocol leaves those zero rows unnormalised).
        self._inverse = np.where(norms < _MIN_NORM, 0.0, 1.0 / np.maximum(norms, _MIN_NORM)).astype(np.float32)
        self._self_sq = (norms >= _MIN_NORM).astype(np.float32)  # |k^|^2: 1, or 0 for a zero row

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(squared L2 distances, key positions), each (Q, min(k, N)), nearest first."""
        q = np.asarray(queries, np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise InputError(f"Query embeddings of shape {q.shape} do not match {self.dim}-d keys: the query was "
                             "embedded with another backbone or feature mode.")
        if not np.isfinite(q).all():
            raise InputError("The query embedding contains NaN or infinite values.")
        if int(k) < 1:
            raise CervixFMError(f"k must be at least 1, not {k}.")
        k = min(int(k), len(self))
        qn = centre_and_normalise(q, self.mean)  # (Q, D)
        q_sq = np.einsum("ij,ij->i", qn, qn)[None, :]  # (1, Q)
        best_d = np.full((len(q), 0), np.inf, np.float32)
        best_i = np.zeros((len(q), 0), np.int64)
        for start in range(0, len(self), self.chunk_rows):
            centred = np.asarray(self.vectors[start:start + self.chunk_rows], np.float32) - self.mean
            inv = self._inverse[start:start + len(centred), None]
            d = self._self_sq[start:start + len(centred), None] + q_sq - 2.0 * (centred @ qn.T) * inv  # (n, Q)
            d = np.maximum(d, 0.0).T  # (Q, n)
            take = min(k, d.shape[1])
            part = np.argpartition(d, take - 1, axis=1)[:, :take] if take < d.shape[1] else \
                np.broadcast_to(np.arange(d.shape[1]), d.shape)
            best_d = np.concatenate([best_d, np.take_along_axis(d, part, axis=1)], axis=1)
            best_i = np.concatenate([best_i, part + start], axis=1)
            if best_d.shape[1] > k:
                best_d, best_i = _nearest(best_d, best_i, k)
        return _nearest(best_d, best_i, k)


def _nearest(d: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest distances per row, ties by key position (faiss's order)."""
    order = np.lexsort((i, d), axis=1)[:, :k]
    return np.take_along_axis(d, order, axis=1).astype(np.float32), np.take_along_axis(i, order, axis=1)
