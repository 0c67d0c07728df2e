"""The tile runner on an in-memory 'slide': results, priorities, cancellation, resume, bad tiles."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from core.errors import InputError
from core.pipeline.journal import Journal
from core.pipeline.runner import TileRun

N = 60


def _boxes(n=N, per_row=10, size=100):
    return np.array([[(i % per_row) * size, (i // per_row) * size, size, size] for i in range(n)])


def _read(i):
    return np.full((4, 4, 3), i % 256, np.uint8)


def _encode(images):
    means = np.array([img.mean() for img in images], np.float32)
    return {"features": np.stack([means, means * 2], axis=1), "score": means / 255}


def _expected():
    feats = np.array([[i, 2 * i] for i in range(N)], np.float32)
    return feats


def test_all_tiles_processed_in_tile_order(tmp_path):
    run = TileRun(_boxes(), _read, _encode, Journal(tmp_path / "j", {"m": 1}), batch_size=7)
    outcome = run.run()
    assert (outcome.done, outcome.total, outcome.cancelled, outcome.skipped) == (N, N, False, {})
    got = run.journal.collect()
    np.testing.assert_array_equal(got["tile_index"], np.arange(N))
    np.testing.assert_array_equal(got["features"], _expected())
    np.testing.assert_array_equal(got["coords"], _boxes()[:, :2])
    np.testing.assert_allclose(got["score"], np.arange(N) / 255)


def test_priority_region_finishes_before_the_rest(tmp_path):
    order = []
    gate = threading.Event()

    def slow_read(i):
        gate.wait()
        return _read(i)

    run = TileRun(_boxes(), slow_read, _encode, Journal(tmp_path / "j", {}), batch_size=4, readers=1,
                  buffer_batches=1)
    # tiles 45..49 and 55..59 cover x in [500, 1000), y in [400, 600)
    region = (500, 400, 999, 599)
    result = {}
    t = threading.Thread(target=lambda: result.update(o=run.run(lambda p: order.extend(p.batch_indices.tolist()))))
    t.start()
    time.sleep(0.2)  # the reader has taken tile 0 and waits
    moved = run.prioritise_region(*region)
    gate.set()
    t.join(30)
    assert moved == 10 and result["o"].done == N
    wanted = {45, 46, 47, 48, 49, 55, 56, 57, 58, 59}
    # at most the tile already in the reader's hands and one buffered batch come before the region's tiles
    last_wanted = max(order.index(i) for i in wanted)
    assert last_wanted < len(wanted) + 1 + 4 + 1


def test_cancel_returns_within_a_batch_and_resume_completes(tmp_path):
    journal = Journal(tmp_path / "j", {"m": 1})
    run = TileRun(_boxes(), _read, _encode, journal, batch_size=5)
    seen = []

    def on_progress(p):
        seen.append(p.done)
        if len(seen) == 2:
            run.cancel()

    outcome = run.run(on_progress)
    assert outcome.cancelled and outcome.done <= 15 and len(seen) <= 3
    resumed = TileRun(_boxes(), _read, _encode, Journal(tmp_path / "j", {"m": 1}), batch_size=5)
    assert resumed.already_done == outcome.done
    assert resumed.run().done == N
    np.testing.assert_array_equal(resumed.journal.collect()["features"], _expected())


def test_journal_of_another_model_is_discarded(tmp_path):
    TileRun(_boxes(), _read, _encode, Journal(tmp_path / "j", {"m": 1}), batch_size=5).run()
    again = TileRun(_boxes(), _read, _encode, Journal(tmp_path / "j", {"m": 2}), batch_size=5)
    assert again.already_done == 0


def test_unreadable_tile_is_skipped_and_recorded(tmp_path):
    def read(i):
        if i == 13:
            raise InputError("tile 13: JPEG data corrupt")
        return _read(i)

    run = TileRun(_boxes(), read, _encode, Journal(tmp_path / "j", {}), batch_size=8)
    outcome = run.run()
    assert outcome.skipped == {13: "tile 13: JPEG data corrupt"} and outcome.done == N - 1
    assert 13 not in run.journal.collect()["tile_index"]
    assert Journal(tmp_path / "j", {}).skipped() == {13: "tile 13: JPEG data corrupt"}


def test_encoder_failure_propagates_and_stops_readers(tmp_path):
    def bad_encode(images):
        raise RuntimeError("out of memory")

    run = TileRun(_boxes(), _read, bad_encode, Journal(tmp_path / "j", {}), batch_size=4)
    with pytest.raises(RuntimeError, match="out of memory"):
        run.run()
