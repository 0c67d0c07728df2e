"""Slide libraries: tiles of analysed slides in an index, searched with a crop cut from the slide."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import CervixFMError, InputError
from core.retrieval import CellIndex
from core.retrieval.embedder import ImageEmbedder
from core.retrieval.slides import add_result, build_slide_index, query_crop, result_entries


@pytest.fixture(scope="module")
def library(analysed_slide, tmp_path_factory):
    _, result = analysed_slide
    return build_slide_index([result.folder.parent], tmp_path_factory.mktemp("lib") / "index")


def test_index_rows_are_the_result_tiles(analysed_slide, library):
    slide, result = analysed_slide
    assert len(library) == len(result.tiles) > 5
    assert library.kind == "slides" and library.tile == {"size": 224, "mpp": 0.5}
    assert library.backbone["sha256"] == result.model["sha256"]
    assert library.slides() == {str(result.slide["path"]): len(result.tiles)}
    features = result.read_features().features
    np.testing.assert_array_equal(library.vectors(np.arange(len(library))), features)
    x, y, w, h = result.tiles[3].tolist()
    assert library.row(3) == {"slide": str(slide), "x": x, "y": y, "w": w, "h": h, "label": None, "score": None,
                              "source": "tile", "name": None}


def test_crop_at_a_tile_centre_finds_that_tile_first(analysed_slide, library, tiny_checkpoint):
    from core.models import load_backbone

    slide, result = analysed_slide
    embedder = ImageEmbedder.from_backbone(load_backbone(tiny_checkpoint))
    for i in (0, len(result.tiles) // 2):
        x, y, w, h = result.tiles[i].tolist()
        crop = query_crop(slide, x + w / 2, y + h / 2, 224, 0.5)
        assert crop.shape == (224, 224, 3)
        hits = CellIndex.open(library.folder).search_images([crop], embedder, k=3)
        assert hits.ids[0, 0] == i and hits.distances[0, 0] < 1e-4


def test_re_adding_a_slide_replaces_it_and_mismatches_are_refused(analysed_slide, tmp_path):
    _, result = analysed_slide
    index = build_slide_index([result.folder], tmp_path / "index")
    n = len(index)
    add_result(index, result)
    index.save()
    assert len(CellIndex.open(tmp_path / "index")) == n
    appended = build_slide_index([result.folder], tmp_path / "index", append=True)
    assert len(appended) == n
    # another tile resolution does not mix
    other = CellIndex.create(tmp_path / "other", index.dim, tile={"size": 224, "mpp": 0.25})
    with pytest.raises(CervixFMError, match="0.25 µm/px"):
        add_result(other, result)
    # another backbone does not mix
    foreign = CellIndex.create(tmp_path / "foreign", index.dim,
                               backbone={"sha256": "f" * 64, "feature": "cls", "embed_dim": index.dim})
    with pytest.raises(CervixFMError, match="cannot be compared"):
        add_result(foreign, result)


def test_unfinished_results_and_wrong_folders(analysed_slide, tmp_path):
    import dataclasses

    _, result = analysed_slide
    with pytest.raises(InputError, match="cancelled, not complete"):
        result_entries(dataclasses.replace(result, status="cancelled"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no slide analysis results"):
        build_slide_index([tmp_path / "empty"], tmp_path / "index")
    with pytest.raises(InputError, match="outside"):
        query_crop(analysed_slide[0], 5000, 10, 224, 0.5)
