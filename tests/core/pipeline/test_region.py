"""Analysing one region (the viewer's "Analyse View"): only its tiles and cells, a "partial" result, and a later
whole-slide run that continues from it and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import numpy as np
import pytest

from core.pipeline.analyze import SlideAnalysis
from core.pipeline.feature_file import read_features
from core.pipeline.scheduler import tiles_in_region
from slide_fixtures import synthetic
from tests_support import one_torch_thread, random_backbone

REGION = (0.0, 0.0, 1300.0, 1300.0)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return synthetic(tmp_path_factory.mktemp("region_slides"), "region.tiff", width=2600, height=2600, seed=4,
                     cellularity=0.6, density=1.5).path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Preset vit-test16 with random weights (unit layer scales, so features depend on the image)."""
    from core.pipeline.analysis_model import model_from_checkpoint

    path = random_backbone(tmp_path_factory.mktemp("region_backbone") / "vit_test16.pth")
    return model_from_checkpoint(path, device="cpu")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


def test_region_run_is_partial_and_the_whole_slide_run_continues_from_it(slide, model, tmp_path):
    region_run = SlideAnalysis(slide, model, tmp_path / "resumed", batch_size=4, region=REGION)
    inside = set(tiles_in_region(region_run.boxes, *REGION).tolist())
    assert 0 < len(inside) < len(region_run.boxes)
    updates, delivered = [], []
    partial = region_run.run(updates.append, tiles_finished=delivered.append)
    assert partial.status == "partial" and partial.summary["region"] == list(REGION)
    assert set(partial.tile_outputs["grid_index"].tolist()) == inside
    assert updates[-1].done == updates[-1].total == len(inside)  # progress counts the region only
    assert delivered == [partial] and not partial.slide_scores
    assert SlideAnalysis(slide, model, tmp_path / "resumed").existing_result() is None  # never reused as complete

    whole = SlideAnalysis(slide, model, tmp_path / "resumed", batch_size=4)
    computed = []
    full = whole.run(lambda p: computed.extend(p.batch_indices.tolist()))
    assert full.status == "complete" and "region" not in full.summary
    assert sorted(computed) == sorted(set(range(len(whole.boxes))) - inside)  # nothing computed twice
    reference = SlideAnalysis(slide, model, tmp_path / "direct", batch_size=4).run()
    a, b = read_features(full.features_path), read_features(reference.features_path)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-5)
    assert not (full.folder / ".work").exists()


def test_a_region_covering_the_slide_gives_a_complete_result(slide, model, tmp_path):
    result = SlideAnalysis(slide, model, tmp_path, batch_size=8, region=(0, 0, 1e9, 1e9)).run()
    assert result.status == "complete"


def test_cell_stage_of_a_region_then_of_the_slide(slide, tmp_path):
    from core.cells import CellAnalysis, CellOptions

    options = CellOptions(core_px=384, index=False, exports=False)
    region = CellAnalysis(slide, tmp_path / "resumed", None, options=options, region=REGION)
    inside = set(tiles_in_region(region.tiles.boxes, *REGION).tolist())
    assert 0 < len(inside) < len(region.tiles)
    updates = []
    part = region.run(updates.append)
    assert part.status == "partial" and part.record["region"] == list(REGION)
    assert set(part.table.tile_index.tolist()) <= inside and len(part.table) > 0
    assert updates[-1].tiles_done == updates[-1].tiles_total == len(inside)
    whole = CellAnalysis(slide, tmp_path / "resumed", None, options=options).run()
    direct = CellAnalysis(slide, tmp_path / "direct", None, options=options).run()
    assert whole.status == direct.status == "complete"
    np.testing.assert_allclose(whole.table.centres, direct.table.centres)
