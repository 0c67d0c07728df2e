"""Reference atlases: the k-NN label vote, the published metrics through an atlas, unlabelled indexes refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from retrieval_support import clustered, tile_rows

from core.errors import InputError
from core.metrics import retrieval_metrics
from core.retrieval import CellIndex
from core.retrieval.atlas import atlas_from_features, build_atlas, open_atlas, query_atlas, vote
from core.retrieval.protocol import evaluate_retrieval

CLASSES = ["NILM", "LSIL", "HSIL"]


def separable(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three tight, far-apart clusters in 16-d (plus a common offset the centring removes)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16, dtype=np.float32) * 10.0
    labels = np.repeat(np.arange(3), n_per_class)
    x = centres[labels] + rng.normal(0, 0.5, (len(labels), 16)).astype(np.float32) + 5.0
    order = rng.permutation(len(labels))
    return x[order], labels[order]


def test_label_vote_on_separable_data(tmp_path):
    keys, key_labels = separable(20, seed=0)
    atlas = atlas_from_features(tmp_path / "atlas", keys, [f"k{i}.png" for i in range(len(keys))], key_labels, CLASSES,
                                data_root=tmp_path)
    queries, query_labels = separable(10, seed=1)
    suggestions = query_atlas(open_atlas(tmp_path / "atlas"), queries, k=10)
    assert [s.label for s in suggestions] == [CLASSES[i] for i in query_labels]
    assert all(s.confidence == 1.0 and s.votes == {s.label: 10} for s in suggestions)
    first = suggestions[0].neighbours[0]
    assert first["source"] == "atlas" and first["name"].startswith("k") and first["label"] == suggestions[0].label
    assert atlas.classes == CLASSES and atlas.kind == "atlas" and atlas.info["data_root"] == str(tmp_path.resolve())


def test_vote_ties_go_to_the_nearest_label():
    assert vote(["LSIL", "HSIL", "HSIL", "LSIL"]) == ("LSIL", 0.5, {"LSIL": 2, "HSIL": 2})
    assert vote(["HSIL", "LSIL", "LSIL"])[:2] == ("LSIL", pytest.approx(2 / 3))


def test_atlas_query_reproduces_the_published_retrieval_metrics(tmp_path):
    keys, queries = clustered(300, seed=1), clustered(80, seed=2)
    rng = np.random.default_rng(3)
    key_labels, query_labels = rng.integers(0, 3, 300), rng.integers(0, 3, 80)
    atlas = atlas_from_features(tmp_path / "atlas", keys, [f"{i}.png" for i in range(300)], key_labels, CLASSES)
    result = atlas.search(queries, k=10)
    names = {c: i for i, c in enumerate(CLASSES)}
    neighbour_labels = np.vectorize(names.get)(result.labels())
    published, _, _ = evaluate_retrieval(keys, key_labels, queries, query_labels)
    assert retrieval_metrics(query_labels, neighbour_labels) == published


def test_index_without_labels_cannot_vote(tmp_path):
    index = CellIndex.create(tmp_path / "slides", 32)
    index.add(clustered(20), tile_rows(20))
    index.save()
    with pytest.raises(InputError, match="is not an atlas: 20 of its 20 entries have no label"):
        open_atlas(tmp_path / "slides")
    with pytest.raises(InputError, match="Labels must be class indices 0..2"):
        atlas_from_features(tmp_path / "bad", clustered(2), ["a", "b"], [0, 3], CLASSES)


def test_build_atlas_from_images_with_a_backbone(tmp_path, tiny_checkpoint):
    from core.models import load_backbone
    from core.retrieval.embedder import ImageEmbedder

    rng = np.random.default_rng(0)
    colours = [(220, 60, 60), (60, 200, 60), (60, 60, 220)]
    paths, labels = [], []
    for i in range(18):
        label = i % 3
        img = np.clip(np.array(colours[label]) + rng.normal(0, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
        path = tmp_path / f"c{i:02d}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
        labels.append(label)
    embedder = ImageEmbedder.from_backbone(load_backbone(tiny_checkpoint))
    atlas = build_atlas(tmp_path / "atlas", paths[3:], [p.name for p in paths[3:]], labels[3:], CLASSES, embedder,
                        data_root=tmp_path, workers=1)
    assert atlas.backbone["embed_dim"] == 96 and atlas.backbone["name"] == "cervixfm-tiny"
    queries = embedder.embed_files(paths[:3], workers=1)
    suggestions = query_atlas(atlas, queries, k=5, backbone=embedder.identity)
    assert [s.label for s in suggestions] == CLASSES
    crops = [np.asarray(Image.open(p)) for p in paths[:3]]
    again = atlas.search_images(crops, embedder, k=5)
    np.testing.assert_array_equal(again.ids, atlas.search(queries, k=5).ids)
