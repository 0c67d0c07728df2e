"""ObjectSet: spatial queries and hit tests agree with brute force at 100,000 objects, appends keep indices stable,
outlines are flattened correctly, subscribers hear about changes."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from core.overlays import ObjectSet
from core.overlays.objects import MAX_MERGE


@pytest.fixture(scope="module")
def boxes():
    rng = np.random.default_rng(1)
    n = 100_000
    xy = rng.uniform(0, 50_000, (n, 2))
    wh = rng.uniform(20, 400, (n, 2))
    return np.column_stack([xy, wh]), rng.integers(0, 4, n)


def brute_query(b, x0, y0, x1, y1):
    return np.nonzero((b[:, 0] <= x1) & (b[:, 0] + b[:, 2] >= x0) & (b[:, 1] <= y1) & (b[:, 1] + b[:, 3] >= y0))[0]


def brute_hit(b, x, y):
    inside = np.nonzero((b[:, 0] <= x) & (x <= b[:, 0] + b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 1] + b[:, 3]))[0]
    if not len(inside):
        return -1
    return int(inside[np.argmin(b[inside, 2] * b[inside, 3])])


def test_query_and_hit_test_match_brute_force_on_100k_boxes(boxes):
    b, cls = boxes
    objects = ObjectSet.from_boxes(b, cls, ["a", "b", "c", "d"])
    snap = objects.snapshot()
    assert len(snap) == len(b)
    rng = np.random.default_rng(2)
    for _ in range(20):
        x0, y0 = rng.uniform(0, 48_000, 2)
        x1, y1 = x0 + rng.uniform(10, 3000), y0 + rng.uniform(10, 3000)
        assert np.array_equal(snap.query(x0, y0, x1, y1), brute_query(b, x0, y0, x1, y1))
    # points inside known boxes (so there is something to hit) and random points (mostly empty glass)
    pick = rng.integers(0, len(b), 150)
    pts = np.column_stack([b[pick, 0] + rng.uniform(0, 1, 150) * b[pick, 2],
                           b[pick, 1] + rng.uniform(0, 1, 150) * b[pick, 3]])
    pts = np.vstack([pts, rng.uniform(0, 50_000, (150, 2))])
    hits = [objects.hit_test(x, y) for x, y in pts]
    expected = [brute_hit(b, x, y) for x, y in pts]
    assert hits == expected
    assert sum(h >= 0 for h in hits) >= 150
    np.testing.assert_array_equal(snap.classes_of(pick), cls[pick])


def test_hit_test_tolerance_picks_nearest_object():
    objects = ObjectSet.from_boxes([[0, 0, 10, 10], [30, 0, 10, 10]], [0, 1], ["a", "b"])
    assert objects.hit_test(14, 5) == -1
    assert objects.hit_test(14, 5, tolerance=5) == 0
    assert objects.hit_test(26, 5, tolerance=5) == 1


def test_appends_merge_chunks_and_keep_global_indices(boxes):
    b, cls = boxes
    b, cls = b[:20_000], cls[:20_000]
    events = []
    grown = ObjectSet(["a", "b", "c", "d"])
    grown.subscribe(events.append)
    start = 0
    rng = np.random.default_rng(3)
    while start < len(b):
        stop = min(len(b), start + int(rng.integers(1, 300)))
        added = grown.add_boxes(b[start:stop], cls[start:stop])
        assert added == range(start, stop)
        start = stop
    snap = grown.snapshot()
    assert len(snap) == len(b)
    assert all(c.n <= MAX_MERGE for c in snap.chunks[1:]) and len(snap.chunks) < 40
    whole = ObjectSet.from_boxes(b, cls, ["a", "b", "c", "d"]).snapshot()
    for x0, y0 in rng.uniform(0, 45_000, (10, 2)):
        assert np.array_equal(snap.query(x0, y0, x0 + 4000, y0 + 4000), whole.query(x0, y0, x0 + 4000, y0 + 4000))
    np.testing.assert_array_equal(snap.bounds_of([0, 12_345, 19_999])[:, :2], b[[0, 12_345, 19_999], :2])
    # one event per append, covering exactly the new objects
    assert len(events) > 50 and events[-1].stop == len(b)
    e = events[3]
    sub = b[e.start:e.stop]
    assert e.bounds == pytest.approx((sub[:, 0].min(), sub[:, 1].min(), (sub[:, 0] + sub[:, 2]).max(),
                                      (sub[:, 1] + sub[:, 3]).max()))
    grown.clear()
    assert len(grown) == 0 and events[-1].bounds is None


def test_outlines_of_mixed_geometries():
    square_with_hole = shapely.Polygon([(0, 0), (100, 0), (100, 100), (0, 100)],
                                       [[(40, 40), (60, 40), (60, 60), (40, 60)]])
    two_parts = shapely.MultiPolygon([shapely.box(200, 0, 210, 10), shapely.box(300, 0, 310, 10)])
    point = shapely.Point(500, 500)
    objects = ObjectSet.from_geometries([square_with_hole, two_parts, point], ["HSIL", "LSIL", "HSIL"],
                                        keys=["id-a", "id-b", "id-c"])
    assert objects.class_names == ("HSIL", "LSIL")
    snap = objects.snapshot()
    coords, connect, owner = snap.paths([0, 1, 2])
    assert len(coords) == 5 + 5 + 5 + 5 + 1  # two rings, two parts, one point
    # a path is never connected to the next path: segments stay inside a ring
    assert connect.sum() == 4 * 4
    a, b, seg_owner = snap.segments([0, 1, 2])
    assert len(a) == 16 and set(seg_owner.tolist()) == {0, 1}
    np.testing.assert_array_equal(snap.segment_counts([0, 1, 2]), [8, 8, 0])
    assert list(snap.is_point([0, 1, 2])) == [False, False, True]
    assert objects.hit_test(50, 50) == -1  # inside the hole
    assert objects.hit_test(10, 50) == 0
    assert objects.hit_test(305, 5) == 1
    assert objects.hit_test(502, 500, tolerance=3) == 2
    assert list(snap.keys_of([2, 0])) == ["id-c", "id-a"]


def test_unknown_class_index_is_rejected():
    with pytest.raises(ValueError, match="class index"):
        ObjectSet.from_boxes([[0, 0, 1, 1]], [5], ["only"])
