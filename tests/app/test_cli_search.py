"""``cervixfm atlas``, ``cervixfm index`` and ``cervixfm search`` end to end, with a tiny backbone."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from cervixfm_app.cli import main
from tests_support import one_torch_thread

COLOURS = {"red": (210, 60, 60), "green": (60, 190, 60), "blue": (60, 60, 210)}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tiny(golden_dir):
    return str(golden_dir / "cervixfm_tiny.pth")


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """train/ test/ train.npy test.npy: 3 colour classes of 48-px crops."""
    root = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 5), ("test", 2)):
        (root / split).mkdir()
        rows = []
        for label, colour in enumerate(COLOURS.values()):
            for i in range(per_class):
                name = f"{split[:2]}{label}{i}.png"
                img = np.clip(np.array(colour) + rng.normal(0, 12, (48, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / name)
                rows.append([name, str(label)])
        np.save(root / f"{split}.npy", np.asarray(rows, dtype=str))
    return root


@pytest.fixture(scope="module")
def atlas(crops, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas") / "atlas"
    assert main(["atlas", "build", "--data_path", str(crops), "--checkpoint", tiny, "--out", str(out),
                 "--split", "train", "--class-names", "red,green,blue", "--device", "cpu", "--workers", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def library(tiny, tmp_path_factory):
    """A demo slide analysed with `cervixfm analyze`, indexed with `cervixfm index build`."""
    root = tmp_path_factory.mktemp("library")
    slide = root / "demo.tiff"
    assert main(["demo-slide", str(slide), "--width", "2048", "--height", "2048", "--seed", "1", "--quiet"]) == 0
    assert main(["analyze", str(slide), "--checkpoint", tiny, "--out", str(root / "results"), "--device", "cpu",
                 "--batch-size", "8", "--cells"]) == 0
    assert main(["index", "build", "--results", str(root / "results"), "--out", str(root / "index")]) == 0
    return slide, root / "index", root / "results" / "demo"


def test_atlas_query_suggests_the_right_colours(atlas, crops, tmp_path, capsys):
    out = tmp_path / "suggestions.json"
    images = [str(crops / "test" / f"te{label}0.png") for label in range(3)]
    assert main(["atlas", "query", "--atlas", str(atlas), "--image", *images, "-k", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["label"] for r in result] == ["red", "green", "blue"]
    assert all(r["confidence"] == 1.0 and len(r["neighbours"]) == 5 for r in result)
    assert result[0]["neighbours"][0]["name"].startswith("train/tr0")
    assert "red (confidence 1.00" in capsys.readouterr().out


def test_search_an_atlas_with_an_image_saves_csv_json_and_sheet(atlas, crops, tmp_path, capsys):
    files = {ext: tmp_path / f"hits.{ext}" for ext in ("csv", "json", "png")}
    assert main(["search", "--index", str(atlas), "--image", str(crops / "test" / "te21.png"), "-k", "6",
                 "--csv", str(files["csv"]), "--json", str(files["json"]), "--sheet", str(files["png"])]) == 0
    printed = capsys.readouterr().out
    assert "suggested label: blue" in printed and printed.count("train/tr2") >= 5
    with open(files["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and rows[0]["rank"] == "1" and rows[0]["label"] == "blue"
    payload = json.loads(files["json"].read_text())
    assert payload["suggestion"]["label"] == "blue" and len(payload["hits"]) == 6
    sheet = np.asarray(Image.open(files["png"]))
    assert sheet.shape[0] > 128 and sheet.shape[1] >= 6 * 128  # the query and six thumbnails


def test_search_a_slide_library_by_position(library, tmp_path, capsys):
    slide, index, result_folder = library
    tiles = np.load(result_folder / "tiles.npz")["tiles"]
    x, y, w, h = tiles[2].tolist()
    sheet = tmp_path / "sheet.png"
    out = tmp_path / "hits.json"
    assert main(["search", "--index", str(index), "--slide", str(slide), "--x", str(x + w // 2),
                 "--y", str(y + h // 2), "-k", "4", "--sheet", str(sheet), "--json", str(out)]) == 0
    hits = json.loads(out.read_text())["hits"]
    assert (hits[0]["x"], hits[0]["y"], hits[0]["w"]) == (x, y, w) and hits[0]["distance"] < 1e-4
    assert hits[0]["source"] == "tile" and hits[0]["slide"].endswith("demo.tiff")
    assert sheet.stat().st_size > 1000
    assert main(["search", "--index", str(index), "--slide", str(slide), "--x", str(x + w // 2), "--y",
                 str(y + h // 2), "-k", "3", "--only-slide", "demo", "--json", str(out)]) == 0
    assert [h["id"] for h in json.loads(out.read_text())["hits"]][:1] == [hits[0]["id"]]
    capsys.readouterr()
    assert main(["index", "info", str(index), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == len(tiles) and info["slides"] == 1 and info["mode"] == "exact"


def test_cell_library_finds_the_cell_under_the_point(library, tmp_path):
    from core.retrieval import CellIndex

    slide, _, result_folder = library
    assert main(["index", "build", "--results", str(result_folder), "--out", str(tmp_path / "cells"), "--cells"]) == 0
    cells = CellIndex.open(tmp_path / "cells")
    assert cells.kind == "cells" and len(cells) > 3 and cells.row(0)["source"] == "cell"
    box = cells.row(1)
    out = tmp_path / "hits.json"
    assert main(["search", "--index", str(tmp_path / "cells"), "--slide", str(slide), "--x", str(box["x"] + box["w"] / 2),
                 "--y", str(box["y"] + box["h"] / 2), "-k", "3", "--json", str(out)]) == 0
    hit = json.loads(out.read_text())["hits"][0]
    assert (hit["x"], hit["y"], hit["name"]) == (box["x"], box["y"], box["name"])


def test_remove_and_verify(library, tmp_path, capsys):
    import shutil

    _, index, _ = library
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    assert main(["index", "remove", str(copy), "--slide", "demo.tiff"]) == 0
    assert main(["index", "verify", str(copy)]) == 0
    assert "0 entries left" in capsys.readouterr().out


def test_clear_errors(atlas, crops, library, tmp_path, golden_dir, capsys):
    def fails(args, message):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err

    query = str(crops / "test" / "te00.png")
    # a data set folder without label tables
    (tmp_path / "unlabelled").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "unlabelled" / "a.png")
    fails(["atlas", "build", "--data_path", str(tmp_path / "unlabelled"), "--checkpoint", str(golden_dir /
           "cervixfm_tiny.pth"), "--out", str(tmp_path / "a")], "is not a data set folder")
    # a query embedded by another backbone
    fails(["search", "--index", str(atlas), "--image", query, "--checkpoint",
           str(golden_dir / "dinov2_reg_tiny.pth")], "cannot be compared")
    # a slide index is not an atlas
    fails(["atlas", "query", "--atlas", str(library[1]), "--image", query], "is not an atlas")
    # a damaged index
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(atlas, broken)
    rows = next(broken.glob("*.rows.npz"))
    rows.write_bytes(rows.read_bytes()[:40])
    fails(["search", "--index", str(broken), "--image", query], rows.name)
    fails(["search", "--index", str(atlas), "--slide", str(library[0])], "--slide needs --x and --y")
    fails(["search", "--index", str(tmp_path / "nowhere"), "--image", query], "does not exist")
    fails(["atlas", "build", "--data_path", str(crops), "--out", str(atlas)], "already holds an index")


def test_an_atlas_remembers_the_input_size_it_was_built_at(crops, tiny, tmp_path, capsys):
    """Built with ``--size 112``: queries are embedded at 112 px without being told, and a query at another size is
    refused (the same weights give other features at another size)."""
    out = tmp_path / "atlas112"
    assert main(["atlas", "build", "--data_path", str(crops), "--checkpoint", tiny, "--out", str(out), "--split",
                 "train", "--class-names", "red,green,blue", "--device", "cpu", "--workers", "1", "--size", "112"]) == 0
    query = str(crops / "test" / "te10.png")
    target = tmp_path / "q.json"
    assert main(["atlas", "query", "--atlas", str(out), "--image", query, "-k", "3", "--json", str(target)]) == 0
    assert json.loads(target.read_text())[0]["label"] == "green"
    capsys.readouterr()
    assert main(["search", "--index", str(out), "--image", query, "--checkpoint", tiny, "--size", "224"]) == 2
    err = capsys.readouterr().err
    assert "of 112-px crops" in err and "of 224-px crops" in err and "cannot be compared" in err
