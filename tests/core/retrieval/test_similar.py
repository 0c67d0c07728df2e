"""Click-to-retrieve without a screen: a point on a real analysed slide, its crop embedded by the bundle, the
slide's own cells and a labelled atlas searched, sources that cannot answer explained."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cell_review_support import analysed_smear
from core.errors import InputError
from core.retrieval.similar import SLIDE_SOURCE, SimilarCellSearch


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    return analysed_smear(tmp_path_factory.mktemp("similar"))


@pytest.fixture(scope="module")
def atlas(analysed, tmp_path_factory):
    """An atlas of 12 cell crops of the slide, written as PNG files, labelled with their predicted class."""
    from core.cells.review import predicted_labels
    from core.pipeline.analysis_model import model_from_bundle
    from core.retrieval.atlas import atlas_from_features
    from core.retrieval.identity import identity_of_model
    from core.slides import open_slide

    slide, bundle, result = analysed
    table = result.read_cells().table
    labels = predicted_labels(table, "cells", result.cells["classifiers"]["cells"]["classes"])
    root = tmp_path_factory.mktemp("atlas_images")
    pick = list(range(0, len(table), 3))[:12]
    names = []
    with open_slide(slide) as s:
        for i in pick:
            name = f"cell_{i:03d}.png"
            Image.fromarray(s.read_scaled(*table.crop_boxes[i], 224, 224)).save(root / name)
            names.append(name)
    model = model_from_bundle(bundle, device="cpu")
    features = model.encode([np.asarray(Image.open(root / n)) for n in names])["features"]
    classes = sorted({labels[i] for i in pick})
    folder = tmp_path_factory.mktemp("atlases") / "ref"
    atlas_from_features(folder, features, names, [classes.index(labels[i]) for i in pick], classes,
                        backbone=identity_of_model(model), data_root=root)
    return folder, pick, [labels[i] for i in pick]


def test_a_click_on_a_cell_finds_that_cell_first(analysed):
    slide, bundle, result = analysed
    table = result.read_cells().table
    search = SimilarCellSearch(device="cpu")
    for i in (0, len(table) // 2):
        # a point snapped to the cell reads the cell's own crop: the very pixels the cell stage embedded
        found = search.query(slide, *table.centres[i], bundle, cells=table, result=result, cell=i)
        (hits,) = found.lists
        assert hits.source == SLIDE_SOURCE and hits.error is None and len(hits.hits) == 24
        best = hits.hits[0]
        assert best.cell == i and best.distance < 1e-4 and best.rank == 1
        # a bare point on the nucleus is cut like any query (whole level-0 pixels): still that cell first
        near = search.query(slide, *table.centres[i], bundle, cells=table, result=result).lists[0].hits[0]
        assert near.cell == i and near.distance < 0.05
        assert best.box == tuple(table.crop_boxes[i]) and best.slide == str(slide)
        assert [h.distance for h in hits.hits] == sorted(h.distance for h in hits.hits)
        probs = table.heads["cells"]["probs"][i]
        assert best.label == result.cells["classifiers"]["cells"]["classes"][int(np.argmax(probs))]
        assert best.score == pytest.approx(float(table.heads["cells"]["abnormality"][i]))
        assert found.query.shape == (224, 224, 3) and found.size == 224 and found.mpp == 0.5
        assert np.allclose(np.add(found.box[:2], 224), table.centres[i], atol=1.0)  # 448 px wide at 0.25 µm/px


def test_cells_without_embeddings_are_searched_with_those_of_the_result_folder(analysed):
    slide, bundle, result = analysed
    table = result.read_cells(embeddings=False).table
    assert table.embeddings is None
    hits = SimilarCellSearch(device="cpu").query(slide, *table.centres[3], bundle, cells=table,
                                                 result=result, cell=3).lists[0]
    assert hits.error is None and hits.hits[0].cell == 3


def test_an_atlas_votes_and_its_hits_point_at_image_files(analysed, atlas):
    slide, bundle, result = analysed
    folder, pick, labels = atlas
    table = result.read_cells().table
    i = pick[4]
    found = SimilarCellSearch(device="cpu").query(slide, *table.centres[i], bundle, atlases=[folder], cells=table,
                                                  result=result, cell=i)
    slide_hits, atlas_hits = found.lists
    assert slide_hits.hits[0].cell == i
    assert atlas_hits.source == "ref" and atlas_hits.error is None and len(atlas_hits.hits) == 12
    best = atlas_hits.hits[0]
    assert best.image.endswith(f"cell_{i:03d}.png") and best.label == labels[4] and best.distance < 1e-3
    assert best.slide is None and best.box is None
    label, confidence, votes = atlas_hits.suggestion
    assert sum(votes.values()) == 10 and votes[label] == round(confidence * 10)
    assert label == max(votes, key=votes.get) or votes[label] == max(votes.values())


def test_sources_that_cannot_answer_say_why(analysed, atlas, tmp_path):
    from core.retrieval.atlas import atlas_from_features

    slide, bundle, result = analysed
    table = result.read_cells().table
    other = tmp_path / "other_backbone"
    atlas_from_features(other, np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32),
                        ["a", "b", "c", "d"], [0, 1, 0, 1], ["A", "B"],
                        backbone={"sha256": "0" * 64, "feature": "cls", "embed_dim": 64, "name": "another"})
    search = SimilarCellSearch(device="cpu")
    found = search.query(slide, *table.centres[0], bundle, cells=table, result=result,
                         atlases=[other, tmp_path / "missing"])
    slide_hits, wrong, missing = found.lists
    assert slide_hits.error is None and slide_hits.hits[0].cell == 0
    assert not wrong.hits and "another" in wrong.error and "cannot be compared" in wrong.error
    assert not missing.hits and "does not exist" in missing.error
    with pytest.raises(InputError, match="outside the slide"):
        search.query(slide, 99999, 5, bundle)
    with pytest.raises(InputError, match="not found"):
        search.query(slide, 10, 10, tmp_path)
