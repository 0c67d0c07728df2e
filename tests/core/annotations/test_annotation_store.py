"""AnnotationStore: edits, undo/redo, events, locking, and the spatial index against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import Point, box

from core.annotations import Annotation, AnnotationStore, LockedError, reviewed
from core.annotations.spatial import ChunkedIndex


def _boxes(n: int, seed: int = 0, size: float = 30.0, extent: float = 100_000.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(size / 2, size * 2, (n, 2))
    return np.column_stack([xy, xy + wh])


def test_add_update_remove_with_undo_redo_and_events():
    store = AnnotationStore()
    events = []
    unsubscribe = store.subscribe(events.append)
    a = Annotation(box(0, 0, 10, 10), classification="NILM")
    b = Annotation(Point(100, 100), name="here")
    store.add(a, label="Add rectangle")
    store.add(b, label="Add point")
    assert len(store) == 2 and a.id in store and store.get(b.id) is b
    assert [e.added for e in events] == [(a,), (b,)] and events[-1].revision == store.revision == 2

    a2 = a.replace(classification="HSIL")
    store.update(a2, label="Classify")
    assert store.get(a.id).class_name == "HSIL" and events[-1].changed == ((a, a2),)
    moved = a2.replace(geometry=box(50, 50, 60, 60))
    store.update(moved, label="Move")
    assert store.query((0, 0, 20, 20)) == [] and store.query((45, 45, 55, 55)) == [moved]
    assert events[-1].bounds() == (0.0, 0.0, 60.0, 60.0)  # old and new place both need a repaint
    store.remove([b.id])
    assert b.id not in store and events[-1].removed == (b,)

    assert store.undo_label == "Delete" and store.undo() and store.get(b.id) is b
    assert events[-1].reason == "undo" and events[-1].added == (b,)
    assert store.undo_label == "Move" and store.undo()
    assert store.query((0, 0, 20, 20)) == [a2]  # the index follows undo
    assert store.undo() and store.get(a.id) is a
    assert store.redo_label == "Classify" and store.redo() and store.get(a.id) is a2
    assert store.undo() and store.undo() and store.undo() and not store.can_undo and len(store) == 0
    assert not store.undo()
    while store.redo():
        pass
    assert store.get(a.id) == moved and b.id not in store  # back to after the delete
    store.add(Annotation(Point(1, 1)))
    assert not store.can_redo  # a new edit discards the redo branch

    unsubscribe()
    n = len(events)
    store.clear()
    assert len(store) == 0 and len(events) == n
    with pytest.raises(ValueError):
        store.add([b, b])
    with pytest.raises(KeyError):
        store.update(Annotation(Point(0, 0)))
    with pytest.raises(KeyError):
        store.remove("no-such-id")


def test_transactions_group_edits_and_roll_back_on_error():
    cells = [Annotation(box(i * 20, 0, i * 20 + 10, 10), "detection", "ASC-US", source="model:m") for i in range(5)]
    store = AnnotationStore(cells)
    with store.transaction("Review page"):
        for c in cells[:3]:
            store.update(reviewed(c, "accepted"))
        store.update(reviewed(cells[3], "reclassified", "HSIL"))
    assert store.undo_label == "Review page"
    assert store.counts() == {("detection", "ASC-US"): 4, ("detection", "HSIL"): 1}
    store.undo()
    assert all(store.get(c.id) is c for c in cells) and not store.can_undo

    with pytest.raises(RuntimeError):
        with store.transaction("Broken"):
            store.remove(cells[0])
            store.add(Annotation(Point(5, 5)))
            raise RuntimeError("boom")
    assert len(store) == 5 and store.get(cells[0].id) is cells[0] and not store.can_undo


def test_locked_objects_and_non_undoable_changes():
    region = Annotation(box(0, 0, 100, 100), name="area", locked=True)
    store = AnnotationStore([region])
    store.update(region.replace(classification="Region*"))  # reclassifying a locked object is fine
    with pytest.raises(LockedError):
        store.update(store.get(region.id).replace(geometry=box(0, 0, 50, 50)))
    with pytest.raises(LockedError):
        store.remove(region)
    store.update(store.get(region.id).replace(locked=False), label="Unlock")
    store.remove(region)
    assert len(store) == 0

    detections = [Annotation(Point(i, i), "detection", source="model:m") for i in range(10)]
    store.add(detections, undoable=False)
    assert store.undo_label == "Delete" and len(store) == 10  # undo does not touch what the analysis added
    store.undo()
    assert len(store) == 11


def test_load_replaces_content_and_forgets_history():
    store = AnnotationStore([Annotation(Point(0, 0))])
    events = []
    store.subscribe(events.append)
    new = [Annotation(Point(5, 5)), Annotation(Point(6, 6))]
    store.load(new)
    assert store.snapshot() == new and not store.can_undo
    assert events[-1].reason == "load" and len(events[-1].removed) == 1 and len(events[-1].added) == 2


def test_select_filters_by_type_class_and_source():
    objs = [Annotation(box(0, 0, 1, 1), "cell", "HSIL", source="model:a"),
            Annotation(box(0, 0, 1, 1), "cell", "NILM", source="ground-truth"),
            Annotation(box(0, 0, 1, 1), "annotation"),
            Annotation(box(0, 0, 1, 1), "detection", "HSIL", source="model:b")]
    store = AnnotationStore(objs)
    assert store.select(types="cell") == objs[:2]
    assert store.select(classes="HSIL") == [objs[0], objs[3]]
    assert store.select(classes=[None]) == [objs[2]]
    assert store.select(sources="model") == [objs[0], objs[3]]
    assert store.select(types=["cell", "detection"], classes=["HSIL"], sources=["model:b"]) == [objs[3]]
    assert store.query((0, 0, 2, 2), types="annotation") == [objs[2]]
    with pytest.raises(ValueError):
        store.select(types="roi")


def test_query_and_hit_test_on_100k_boxes_match_brute_force():
    b = _boxes(100_000, seed=1)
    geoms = shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])
    objs = [Annotation(g, "detection", source="model:m") for g in geoms]
    store = AnnotationStore()
    store.add(objs, undoable=False)
    rng = np.random.default_rng(2)
    for _ in range(30):
        x0, y0 = rng.uniform(-1000, 100_000, 2)
        w, h = rng.uniform(10, 8000, 2)
        got = {a.id for a in store.query((x0, y0, x0 + w, y0 + h))}
        want = (b[:, 0] <= x0 + w) & (b[:, 2] >= x0) & (b[:, 1] <= y0 + h) & (b[:, 3] >= y0)
        assert got == {objs[i].id for i in np.flatnonzero(want)}
    assert len(store.query((-10, -10, 200_000, 200_000))) == 100_000
    # the array form for zoomed-out drawing: the same objects' boxes and colours, no Python objects
    rect = (20_000, 30_000, 50_000, 45_000)
    want = (b[:, 0] <= rect[2]) & (b[:, 2] >= rect[0]) & (b[:, 1] <= rect[3]) & (b[:, 3] >= rect[1])
    got_bounds, got_colors = store.query_boxes(rect)
    assert np.array_equal(got_bounds, b[want]) and (got_colors == (255, 0, 0)).all()
    for i in rng.choice(len(objs), 20, replace=False):
        x, y = (b[i, 0] + b[i, 2]) / 2, (b[i, 1] + b[i, 3]) / 2
        hits = store.hit_test(x, y, tolerance=0)
        inside = np.flatnonzero((b[:, 0] <= x) & (b[:, 2] >= x) & (b[:, 1] <= y) & (b[:, 3] >= y))
        assert {a.id for a in hits} == {objs[j].id for j in inside}
        areas = [a.geometry.area for a in hits]
        assert areas == sorted(areas)  # smallest containing object first
    # tolerance: a point just outside box 0's right edge hits it only with enough tolerance
    x, y = b[0, 2] + 3, (b[0, 1] + b[0, 3]) / 2
    assert objs[0].id not in {a.id for a in store.hit_test(x, y, tolerance=2)}
    assert objs[0].id in {a.id for a in store.hit_test(x, y, tolerance=3.5)}


def test_incremental_adds_and_deletes_stay_consistent_with_brute_force():
    b = _boxes(3000, seed=3, size=200, extent=10_000)
    objs = [Annotation(g) for g in shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])]
    store = AnnotationStore()
    live = set()
    rng = np.random.default_rng(4)
    for i, a in enumerate(objs):
        store.add(a)  # one at a time, with queries in between, as a person draws
        live.add(i)
        if i % 50 == 0:
            x0, y0 = rng.uniform(0, 10_000, 2)
            rect = (x0, y0, x0 + 1500, y0 + 1500)
            want = {objs[j].id for j in live if b[j, 0] <= rect[2] and b[j, 2] >= rect[0]
                    and b[j, 1] <= rect[3] and b[j, 3] >= rect[1]}
            assert {a.id for a in store.query(rect)} == want
    assert len(store._index.chunk_sizes) < 16  # logarithmic merging, not one tree per object
    gone = rng.choice(len(objs), 2500, replace=False)
    store.remove([objs[j] for j in gone])  # enough to trigger compaction
    live -= set(gone.tolist())
    assert len(store._index) == len(live) == len(store)
    got = {a.id for a in store.query((0, 0, 20_000, 20_000))}
    assert got == {objs[j].id for j in live}
    store.undo()  # the deletion comes back through the rebuilt index
    assert len(store.query((0, 0, 20_000, 20_000))) == 3000


def test_chunked_index_predicates_and_distance():
    index = ChunkedIndex(pending_limit=4)
    polys = [Point(x, 0).buffer(5) for x in range(0, 100, 10)]
    for k, p in enumerate(polys):
        index.insert(k, p)
    assert sorted(index.query(Point(20, 0), "intersects").tolist()) == [2]
    assert sorted(index.query_box(14, -1, 24, 1).tolist()) == [1, 2]
    assert sorted(index.query_box(14.9, 4.9, 15.1, 5.1, exact=False).tolist()) == [1, 2]  # bbox corners
    assert sorted(index.query_box(14.9, 4.9, 15.1, 5.1, exact=True).tolist()) == []
    keys, dist = index.within_distance(25, 0, 1)
    assert sorted(keys.tolist()) == [2, 3] and np.allclose(dist, 0, atol=0.01)
