"""The in-memory key set ranks neighbours exactly as the published protocol's exact search does."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InputError
from core.retrieval.keyset import KeySet
from core.retrieval.protocol import exact_search, prepare_embeddings
from retrieval_support import clustered


def test_ranking_and_distances_match_the_protocol_across_chunks():
    keys = clustered(3000, dim=32, seed=1)
    queries = clustered(40, dim=32, seed=2)
    want_d, want_i = exact_search(*prepare_embeddings(keys, queries), k=15)
    got_d, got_i = KeySet(keys, chunk_rows=700).search(queries, k=15)  # several chunks, a ragged last one
    np.testing.assert_allclose(got_d, want_d, atol=2e-5)
    # same neighbours; positions may only swap where two distances tie to float32 rounding
    same = got_i == want_i
    assert same.mean() > 0.99
    for q, r in zip(*np.nonzero(~same)):
        assert abs(want_d[q, r] - got_d[q, r]) < 2e-5


def test_a_key_finds_itself_first_and_k_is_capped():
    keys = clustered(50, dim=16, seed=3)
    d, i = KeySet(keys).search(keys[[7, 20]], k=100)
    assert d.shape == (2, 50) and list(i[:, 0]) == [7, 20]
    assert np.all(d[:, 0] < 1e-5) and np.all(np.diff(d, axis=1) >= 0)


def test_ties_go_to_the_earlier_key_and_a_key_at_the_mean_stays_zero():
    keys = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], np.float32)  # mean (0.25, 0)
    d, i = KeySet(keys).search(np.array([[5.0, 0.0]], np.float32), k=4)
    assert list(i[0][:2]) == [0, 1]
    want_d, want_i = exact_search(*prepare_embeddings(keys, np.array([[5.0, 0.0]], np.float32)), k=4)
    np.testing.assert_allclose(d, want_d, atol=1e-6)
    assert list(i[0]) == list(want_i[0])


def test_wrong_queries_are_refused_with_a_message():
    ks = KeySet(clustered(10, dim=8))
    with pytest.raises(InputError, match="8-d keys"):
        ks.search(np.zeros((1, 9), np.float32))
    with pytest.raises(InputError, match="NaN"):
        ks.search(np.full(8, np.nan, np.float32))
    with pytest.raises(InputError):
        KeySet(np.zeros((0, 8), np.float32))
