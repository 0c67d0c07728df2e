"""Cell index: exact search against brute force, persistence, removal, approximate recall, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from retrieval_support import clustered, tile_rows

from core.errors import CervixFMError, InputError
from core.retrieval import CellIndex, RowTable
from core.retrieval.ann import neighbour_recall
from core.retrieval.protocol import evaluate_retrieval

BACKBONE = {"sha256": "a" * 64, "feature": "cls", "embed_dim": 32, "name": "test-vit", "checkpoint": None,
            "preset": None}


def brute_force(keys: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The published protocol written out in numpy: key-mean centring, L2 normalisation, squared L2, stable sort."""
    mean = keys.mean(axis=0)
    kn = (keys - mean) / np.linalg.norm(keys - mean, axis=1, keepdims=True)
    qn = (queries - mean) / np.linalg.norm(queries - mean, axis=1, keepdims=True)
    d = ((qn[:, None, :] - kn[None, :, :]) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


def test_exact_search_matches_numpy_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    keys = (rng.normal(size=(500, 32)) + 2.0).astype(np.float32)
    queries = (rng.normal(size=(40, 32)) + 2.0).astype(np.float32)
    index = CellIndex.create(tmp_path / "ix", 32)
    index.add(keys[:300], tile_rows(300))
    index.add(keys[300:], tile_rows(200, start=300))  # two segments, searched as one key set
    result = index.search(queries, k=15)
    want_ids, want_d = brute_force(keys.astype(np.float64), queries.astype(np.float64), 15)
    np.testing.assert_array_equal(result.ids, want_ids)
    np.testing.assert_allclose(result.distances, want_d, atol=1e-5)
    np.testing.assert_allclose(result.similarities, 1 - want_d / 2, atol=1e-5)
    assert index.mode == "exact"


def test_exact_search_is_the_published_evaluation_bit_for_bit(tmp_path):
    keys = clustered(400, seed=1)
    queries = clustered(50, seed=2)
    labels = np.arange(400) % 4
    index = CellIndex.create(tmp_path / "ix", 32)
    index.add(keys, RowTable.from_columns(source="atlas", label=[str(v) for v in labels]))
    index.save()
    result = CellIndex.open(tmp_path / "ix").search(queries, k=10)
    _, indices, distances = evaluate_retrieval(keys, labels, queries, np.zeros(50, int))
    np.testing.assert_array_equal(result.ids, indices)
    np.testing.assert_array_equal(result.distances, distances)


def test_round_trip_incremental_add_and_metadata(tmp_path):
    x = clustered(300)
    index = CellIndex.create(tmp_path / "ix", 32, backbone=BACKBONE, tile={"size": 224, "mpp": 0.5})
    rows = tile_rows(300)
    rows[5].update(label="HSIL", score=0.75)
    ids = index.add(x, rows)
    assert ids.tolist() == list(range(300))
    before = index.search(x[:7], k=5)
    index.save()
    again = CellIndex.open(tmp_path / "ix")
    assert len(again) == 300 and again.backbone == BACKBONE and again.tile == {"size": 224, "mpp": 0.5}
    after = again.search(x[:7], k=5)
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_array_equal(before.distances, after.distances)
    assert again.row(5) == {"slide": "/data/slide2.tiff", "x": 50, "y": 100, "w": 448, "h": 448, "label": "HSIL",
                            "score": 0.75, "source": "tile", "name": None}
    assert after.records(0)[0]["rank"] == 1 and after.records(0)[0]["id"] == 0
    np.testing.assert_array_equal(again.vectors(np.array([3, 1])), x[[3, 1]])
    # incremental add after reopening, then reopen again
    more = clustered(50, seed=5)
    new_ids = again.add(more, tile_rows(50, start=300))
    assert new_ids.tolist() == list(range(300, 350))
    again.save()
    third = CellIndex.open(tmp_path / "ix")
    assert len(third) == 350
    assert third.search(more[:1], k=1).ids[0, 0] == 300
    assert third.slides() == {"/data/slide0.tiff": 117, "/data/slide1.tiff": 117, "/data/slide2.tiff": 116}
    # only the files the manifest names are left
    names = sorted(p.name for p in (tmp_path / "ix").iterdir())
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    named = {s["vectors"]["file"] for s in manifest["segments"]} | {s["rows_file"]["file"] for s in manifest["segments"]}
    assert set(names) == named | {"manifest.json"}


def test_unsaved_and_interrupted_changes_leave_the_saved_index_intact(tmp_path, monkeypatch):
    import core.retrieval.storage as storage

    index = CellIndex.create(tmp_path / "ix", 32)
    index.add(clustered(100), tile_rows(100))
    index.save()
    index.add(clustered(10, seed=3), tile_rows(10))
    assert len(CellIndex.open(tmp_path / "ix")) == 100  # staged, not committed

    def crash(*_args, **_kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(storage, "write_manifest", crash)
    with pytest.raises(OSError):
        index.save()  # new segment files written, manifest not replaced
    monkeypatch.undo()
    assert len(CellIndex.open(tmp_path / "ix")) == 100
    reopened = CellIndex.open(tmp_path / "ix")
    reopened.add(clustered(5, seed=4), tile_rows(5))
    reopened.save()  # removes the crash leftovers
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert len(list((tmp_path / "ix").glob("seg-*"))) == 2 * len(manifest["segments"])


def test_remove_all_entries_of_a_slide(tmp_path):
    x = clustered(300)
    index = CellIndex.create(tmp_path / "ix", 32)
    index.add(x, tile_rows(300, slides=3))
    assert index.remove_slide("slide1") == 100  # by stem
    assert len(index) == 200 and "/data/slide1.tiff" not in index.slides()
    hits = index.search(x, k=200)
    assert all(index.row(i)["slide"] != "/data/slide1.tiff" for i in np.unique(hits.ids))
    # the remaining entries still rank by the protocol over the remaining key set
    keep = np.array([i for i in range(300) if i % 3 != 1])
    want, _ = brute_force(x[keep].astype(np.float64), x[:5].astype(np.float64), 10)
    np.testing.assert_array_equal(index.search(x[:5], k=10).ids, keep[want])
    index.save()
    reopened = CellIndex.open(tmp_path / "ix")
    assert len(reopened) == 200 and set(reopened.slides()) == {"/data/slide0.tiff", "/data/slide2.tiff"}
    with pytest.raises(InputError, match="no entries of slide"):
        reopened.remove_slide("slide1.tiff")


def test_search_within_one_slide(tmp_path):
    x = clustered(300)
    index = CellIndex.create(tmp_path / "ix", 32)
    index.add(x, tile_rows(300, slides=3))
    result = index.search(x[:4], k=7, slide="slide1.tiff")
    assert {index.row(i)["slide"] for i in result.ids.ravel()} == {"/data/slide1.tiff"}
    # brute force over that slide's entries, centred on the mean of the whole index
    mean = x.astype(np.float64).mean(axis=0)
    mine = np.arange(1, 300, 3)
    kn = (x[mine] - mean) / np.linalg.norm(x[mine] - mean, axis=1, keepdims=True)
    qn = (x[:4] - mean) / np.linalg.norm(x[:4] - mean, axis=1, keepdims=True)
    want = mine[np.argsort(((qn[:, None] - kn[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :7]]
    np.testing.assert_array_equal(result.ids, want)


def test_float16_storage_halves_the_vectors(tmp_path):
    x = clustered(400)
    small = CellIndex.create(tmp_path / "f16", 32, dtype="float16")
    small.add(x, tile_rows(400))
    small.save()
    full = CellIndex.create(tmp_path / "f32", 32)
    full.add(x, tile_rows(400))
    full.save()
    size = {name: next((tmp_path / name).glob("*.vectors.npy")).stat().st_size for name in ("f16", "f32")}
    assert size["f16"] < 0.55 * size["f32"]
    a = CellIndex.open(tmp_path / "f16").search(x[:50], k=10)
    b = full.search(x[:50], k=10)
    assert neighbour_recall(a.ids, b.ids) >= 0.95


def test_approximate_index_recall_persistence_add_and_remove(tmp_path):
    x = clustered(6000, dim=32, clusters=40)
    queries = clustered(6200, dim=32, clusters=40)[6000:]  # same distribution, not stored
    index = CellIndex.create(tmp_path / "ix", 32, exact_limit=2000)
    index.add(x, tile_rows(6000, slides=4))
    index.save()
    assert index.mode == "approximate" and index.ann_settings is not None
    assert index.ann_settings.measured_recall >= 0.95
    assert list((tmp_path / "ix").glob("ann-*.faiss"))
    want, _ = brute_force(x.astype(np.float64), queries.astype(np.float64), 10)
    found = index.search(queries, k=10)
    recall = neighbour_recall(found.ids, want)
    assert recall >= 0.95, recall
    reopened = CellIndex.open(tmp_path / "ix")
    np.testing.assert_array_equal(reopened.search(queries, k=10).ids, found.ids)
    # an incremental add is searchable at once, without retraining
    extra = clustered(100, dim=32, clusters=40, seed=9)
    ids = reopened.add(extra, tile_rows(100, start=6000))
    assert reopened.search(extra[:20], k=1).ids[:, 0].tolist() == ids[:20].tolist()
    reopened.remove_slide("slide0.tiff")
    reopened.save()
    last = CellIndex.open(tmp_path / "ix")
    hits = last.search(queries, k=10)
    assert all(last.row(i)["slide"] != "/data/slide0.tiff" for i in np.unique(hits.ids))
    assert len(last._ann) == len(last)
    # shrinking below the exact limit drops the approximate index
    for s in ("slide1.tiff", "slide2.tiff"):
        last.remove_slide(s)
    last.save()
    assert last.mode == "exact" and not list((tmp_path / "ix").glob("ann-*.faiss"))


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.fixture()
def saved(tmp_path):
    index = CellIndex.create(tmp_path / "ix", 32, backbone=BACKBONE)
    index.add(clustered(200), tile_rows(200))
    index.save()
    return tmp_path / "ix"


def test_query_of_another_embedding_size_is_refused(saved):
    index = CellIndex.open(saved)
    with pytest.raises(InputError, match=r"holds 32-d embeddings .* the query is 96-d: it was embedded with another"):
        index.search(np.zeros((1, 96), np.float32))
    with pytest.raises(InputError, match="96-d"):
        index.add(np.zeros((2, 96), np.float32), tile_rows(2))
    other = {**BACKBONE, "sha256": "b" * 64, "name": "other-vit"}
    with pytest.raises(CervixFMError, match="Embeddings of different backbones cannot be compared"):
        index.search(clustered(1), backbone=other)
    with pytest.raises(InputError, match="NaN"):
        index.search(np.full(32, np.nan, np.float32))


def test_bad_additions_are_refused(saved):
    index = CellIndex.open(saved)
    with pytest.raises(InputError, match="one row per embedding"):
        index.add(clustered(3), tile_rows(2))
    with pytest.raises(InputError, match="Unknown row source"):
        index.add(clustered(1), [{"source": "nucleus"}])
    with pytest.raises(InputError, match="Unknown metadata field"):
        index.add(clustered(1), [{"source": "cell", "colour": "red"}])
    with pytest.raises(InputError, match="empty"):
        CellIndex.create(saved.parent / "empty", 32).search(clustered(1))


@pytest.mark.parametrize("damage", ["manifest", "rows", "vectors", "vectors-bytes"])
def test_damaged_files_are_named(saved, damage):
    manifest = json.loads((saved / "manifest.json").read_text())
    seg = manifest["segments"][0]
    if damage == "manifest":
        target = saved / "manifest.json"
        target.write_text('{"format": "cervixfm-cell-index", "vers')
    elif damage == "rows":
        target = saved / seg["rows_file"]["file"]
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "vectors":
        target = saved / seg["vectors"]["file"]
        target.write_bytes(target.read_bytes()[:-100])
    else:
        target = saved / seg["vectors"]["file"]
        data = bytearray(target.read_bytes())
        data[-5] ^= 0xFF
        target.write_bytes(bytes(data))
    with pytest.raises(InputError, match=str(target.name).replace(".", r"\.")):
        CellIndex.open(saved)


def test_damaged_faiss_file_is_named(tmp_path):
    index = CellIndex.create(tmp_path / "ix", 32, exact_limit=1000)
    index.add(clustered(1500), tile_rows(1500))
    index.save()
    ann = next((tmp_path / "ix").glob("ann-*.faiss"))
    data = bytearray(ann.read_bytes())
    data[100:200] = b"\x00" * 100
    ann.write_bytes(bytes(data))
    with pytest.raises(InputError, match=ann.name):
        CellIndex.open(tmp_path / "ix")


def test_existing_folders_are_not_clobbered(saved, tmp_path):
    with pytest.raises(InputError, match="already holds an index"):
        CellIndex.create(saved, 32)
    CellIndex.create(saved, 16, overwrite=True)
    assert CellIndex.open(saved).dim == 16 and len(CellIndex.open(saved)) == 0
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="not empty"):
        CellIndex.create(other, 32)
    with pytest.raises(InputError, match="not a CervixFM cell index"):
        CellIndex.open(other)
