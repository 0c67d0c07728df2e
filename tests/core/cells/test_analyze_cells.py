"""The cell stage inside a slide analysis: outputs, embeddings, crops, index, reuse, cancel and resume, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from shapely.geometry import shape

from core.cells import CellAnalysis, CellOptions, load_cells
from core.cells.evaluate import match_cells, read_truth
from core.cells.stains import haematoxylin, optical_density
from core.pipeline.analyze import SlideAnalysis
from core.slides import open_slide

CLASSES = ["Superficial squamous", "Intermediate squamous", "Parabasal", "LSIL", "HSIL", "Inflammatory"]


@pytest.fixture(scope="module")
def bundle_model(cell_model, tmp_path_factory):
    """The test backbone plus a random 6-class cell-classifier head, loaded through a bundle."""
    from core.models.bundle import BundleSpec, HeadSpec, write_bundle_manifest
    from core.models.heads import LinearHead, save_head
    from core.pipeline.analysis_model import model_from_bundle

    folder = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(1)
    head = LinearHead(cell_model.embed_dim, len(CLASSES))
    torch.nn.init.normal_(head.classifier.weight, std=0.5)
    file = save_head(folder / "cells.safetensors", "linear", head, head.config(), CLASSES,
                     [[200, 100, 100]] * len(CLASSES), {"normal_classes": [c for c in CLASSES if "SIL" not in c]})
    spec = BundleSpec(folder, "test", cell_model.backbone.path, None, None, None, 224, 0.5,
                      (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (HeadSpec("cells", "cell-classifier", file),))
    write_bundle_manifest(spec)
    return model_from_bundle(folder, device="cpu")


@pytest.fixture(scope="module")
def analysed(smear, bundle_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysed")
    analysis = SlideAnalysis(smear.path, bundle_model, out, batch_size=16, cells=CellOptions(core_px=512))
    updates = []
    result = analysis.run(cell_progress=updates.append)
    return result, updates


def test_analysis_with_cells_records_and_writes_every_output(analysed, bundle_model):
    result, updates = analysed
    rec = result.cells
    assert result.status == "complete" and rec["status"] == "complete" and rec["count"] > 100
    on_disk = json.loads((result.folder / "result.json").read_text())["cells"]
    assert on_disk["count"] == rec["count"] and on_disk["files"] == rec["files"]
    for name in ("cells", "geojson", "csv", "ranked", "index"):
        assert (result.folder / rec["files"][name]).exists()
    assert updates and updates[-1].tiles_done == updates[-1].tiles_total == rec["tiles_total"]
    assert updates[-1].cells == rec["count"]
    cf = result.read_cells()
    table = cf.table
    assert len(table) == rec["count"] and table.embeddings.shape == (len(table), bundle_model.embed_dim)
    probs = table.heads["cells"]["probs"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(table.heads["cells"]["abnormality"], probs[:, 3] + probs[:, 4], atol=1e-5)
    summary = rec["slide_summary"]["cells"]
    assert sum(summary["cells_per_class"].values()) == len(table)
    ranked = rec["ranked"]["cells"]["abnormality"]
    scores = [c["score"] for c in ranked]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(probs[:, 3:5].sum(1).max(), abs=1e-4)


def test_embeddings_are_the_backbone_features_of_the_stored_crops(analysed, bundle_model, smear):
    table = analysed[0].read_cells().table
    pick = np.linspace(0, len(table) - 1, 6).astype(int)
    with open_slide(smear.path) as slide:
        crops = [slide.read_scaled(*table.crop_boxes[i], 224, 224) for i in pick]
    want = bundle_model.encode(crops)["features"]
    np.testing.assert_allclose(table.embeddings[pick], want, rtol=1e-4, atol=1e-4)


def test_crops_are_centred_on_the_nucleus(analysed, smear):
    table = analysed[0].read_cells().table
    middle = table.crop_boxes[:, :2] + table.crop_boxes[:, 2:] / 2
    assert np.allclose(table.crop_boxes[:, 2:], 448.0)  # 224 px at 0.5 µm/px on a 0.25 µm/px slide
    assert (np.hypot(*(middle - table.centres).T) / 2 <= 0.71).all()  # detected centre, in crop pixels
    truth = read_truth(smear.geojson)
    d, t, _ = match_cells(list(table.polygons()), truth.polygons)
    solo = ~truth.overlapping[t]
    off = np.hypot(*(middle[d[solo]] - truth.nucleus_centres[t[solo]]).T) / 2
    assert len(off) >= 30 and (off <= 4).mean() >= 0.97
    # and in the pixels themselves: the dark blob nearest the crop centre is centred on it
    from scipy import ndimage

    with open_slide(smear.path) as slide:
        near = []
        for i in d[solo][:40]:
            crop = slide.read_scaled(*table.crop_boxes[i], 224, 224)
            h = haematoxylin(optical_density(crop, (240, 240, 238)))
            labels, n = ndimage.label(ndimage.gaussian_filter(h, 1) > 0.6)
            centres = np.array(ndimage.center_of_mass(np.ones_like(h), labels, range(1, n + 1)))
            near.append(np.hypot(*(centres - 111.5).T).min())
    assert (np.array(near) <= 4).mean() >= 0.95


def test_exports_are_valid_qupath_cells(analysed):
    result = analysed[0]
    table = result.read_cells().table
    features = json.loads((result.folder / "cells.geojson").read_text())["features"]
    assert len(features) == len(table)
    for f in features[:80]:
        props = f["properties"]
        assert props["objectType"] == "cell" and props["classification"]["name"] in CLASSES
        cell, nucleus = shape(f["geometry"]), shape(f["nucleusGeometry"])
        assert cell.is_valid and nucleus.is_valid and f["geometry"]["coordinates"][0][0] == \
            f["geometry"]["coordinates"][0][-1]
        assert cell.intersection(nucleus).area >= 0.9 * nucleus.area
        assert 0 <= props["measurements"]["Abnormality score"] <= 1
    assert len({f["id"] for f in features}) == len(features)
    rows = (result.folder / "cells.csv").read_text().splitlines()
    ranked = (result.folder / "cells_ranked.csv").read_text().splitlines()
    assert len(rows) == len(ranked) == len(table) + 1
    header = ranked[0].split(",")
    col = header.index("abnormality")
    scores = [float(r.split(",")[col]) for r in ranked[1:]]
    assert scores == sorted(scores, reverse=True)


def test_each_cell_is_in_the_slide_cell_index(analysed):
    from core.retrieval import CellIndex

    result = analysed[0]
    table = result.read_cells().table
    index = CellIndex.open(result.folder / "cell_index")
    assert len(index) == len(table) and index.tile == {"size": 224, "mpp": 0.5}
    hits = index.search(table.embeddings[:5], k=1)
    rows = [index.row(int(i)) for i in hits.ids[:, 0]]
    features = json.loads((result.folder / "cells.geojson").read_text())["features"]
    assert [r["name"] for r in rows] == [f["id"] for f in features[:5]]
    assert rows[0]["source"] == "cell" and rows[0]["w"] == 448


def test_a_second_run_reuses_the_cells(analysed, bundle_model, smear):
    result = analysed[0]
    h5 = result.folder / "cells.h5"
    before = h5.stat().st_mtime_ns
    again = SlideAnalysis(smear.path, bundle_model, result.folder.parent, cells=CellOptions(core_px=512)).run()
    assert h5.stat().st_mtime_ns == before and again.cells["count"] == result.cells["count"]


def test_cancel_keeps_a_partial_result_and_resume_finishes_it(smear, cell_model, embedded, tmp_path):
    reference = embedded[smear.path.stem]  # the same stage, uninterrupted
    stage = CellAnalysis(smear.path, tmp_path / "run", cell_model, options=CellOptions(core_px=512, batch_size=8))
    seen = []

    def progress(p):
        seen.append(p.tiles_done)
        stage.cancel()

    partial = stage.run(progress)
    assert partial.status == "cancelled" and len(seen) == 1 and 0 < seen[0] < len(stage.tiles)
    assert load_cells(tmp_path / "run").meta["status"] == "cancelled" and (tmp_path / "run" / ".cells-work").is_dir()
    resumed = CellAnalysis(smear.path, tmp_path / "run", cell_model, options=CellOptions(core_px=512)).run()
    assert resumed.status == "complete" and not (tmp_path / "run" / ".cells-work").exists()
    np.testing.assert_allclose(resumed.table.centres, reference.table.centres)
    np.testing.assert_allclose(resumed.table.embeddings, reference.table.embeddings, rtol=1e-5, atol=1e-5)


def test_region_priority_localises_the_viewport_first(smear, tmp_path):
    stage = CellAnalysis(smear.path, tmp_path, None, options=CellOptions(core_px=384, readers=1))
    target = [i for i, core in enumerate(stage.tiles.cores) if tuple(core[:2]) == (1536, 1536)]
    assert len(target) == 1 and target[0] > 0  # a 768-px core in the middle of the smear, not the first in order
    stage.prioritise_region(1600, 1600, 2200, 2200)
    first = []
    stage.run(lambda p: first.append(p.new_cells) if not first else None)
    assert len(first[0]) and first[0].tile_index[0] == target[0]
    inside = first[0].tile_index == target[0]
    assert ((first[0].centres[inside] >= 1536) & (first[0].centres[inside] < 2304)).all()


def test_cli_analyze_cells_then_train_a_head(smear2, cell_model, tmp_path, capsys):
    from cervixfm_app.cli import main

    ckpt = str(cell_model.backbone.path)
    assert main(["analyze", str(smear2.path), "--checkpoint", ckpt, "--out", str(tmp_path), "--cells",
                 "--device", "cpu", "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "cells:" in out and "found (complete)" in out
    folder = tmp_path / smear2.path.stem
    assert main(["train-cell-classifier", str(folder), "--out", str(tmp_path / "head.safetensors"),
                 "--patience", "3"]) == 0
    from core.cells import classifier_from_head_file

    clf = classifier_from_head_file(tmp_path / "head.safetensors")
    assert clf.abnormal_classes == ["LSIL", "HSIL"] and clf.module.in_dim == cell_model.embed_dim
    assert main(["train-cell-classifier", str(folder), "--truth", "a.geojson", "b.geojson", "--out",
                 str(tmp_path / "x.safetensors")]) == 2
    assert "one each" in capsys.readouterr().err


def test_an_unreadable_tile_is_skipped_and_a_bug_is_raised(smear, tmp_path):
    from core.errors import SlideError

    stage = CellAnalysis(smear.path, tmp_path / "a", None, options=CellOptions(core_px=768))
    real = stage.tiles.read

    def damaged(i):
        if i == 1:
            raise SlideError("tile at level 1 is damaged (JPEG error)")
        return real(i)

    stage.tiles.read = damaged
    result = stage.run()
    assert result.status == "complete" and result.record["tiles_skipped"] == 1
    assert len(result) and 1 not in set(result.table.tile_index.tolist())
    broken = CellAnalysis(smear.path, tmp_path / "b", None, options=CellOptions(core_px=768))
    broken.detector.detect = lambda tile, frame: 1 / 0
    with pytest.raises(ZeroDivisionError):
        broken.run()
