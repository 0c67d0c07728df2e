"""The demo bundle recipe (quick variant): a real bundle the pipeline runs, honest README, refusals and cancellation.

One quick build (about 15 s on a busy 2-core machine) is shared by the module; it is made through the CLI at the
default location, with the data dir in a temporary folder, so it also shows that the viewer finds it there.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from core.errors import CervixFMError
from core.models.bundle import read_bundle_spec
from core.synthetic import CLASS_NAMES
from slide_fixtures import synthetic


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A private data/cache dir for the module: the build never touches the user's files."""
    folder = tmp_path_factory.mktemp("cervixfm_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CERVIXFM_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def built(home):
    """``cervixfm demo-bundle --quick`` with no --out: (bundle folder, exit code, its stdout)."""
    import contextlib
    import io

    from cervixfm_app.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["demo-bundle", "--quick", "--quiet"])
    return home / "bundles" / "demo", code, out.getvalue()


@pytest.fixture(scope="module")
def small_smear(tmp_path_factory):
    """A smear no build step has seen (another seed), small enough to analyse in a few seconds."""
    return synthetic(tmp_path_factory.mktemp("unseen"), "unseen.tiff", width=1536, height=1536, seed=7,
                     abnormal_fraction=0.4, density=2.0, cellularity=0.6)


def test_cli_writes_a_valid_bundle_where_the_viewer_looks(built, home):
    from cervixfm_app.viewer.demo import demo_bundle_path

    folder, code, stdout = built
    assert code == 0
    assert demo_bundle_path() == folder
    spec = read_bundle_spec(folder)
    assert {h.name: h.role for h in spec.heads} == {"cells": "cell-classifier", "tiles": "tile-classifier"}
    assert spec.tile_size == 112 and spec.target_mpp == 0.5 and spec.sha256
    assert "held-out cells: balanced accuracy" in stdout and "not for diagnosis" in stdout
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_heads_carry_the_synthetic_ground_truth_classes(built):
    from core.cells import classifiers_of_model
    from core.pipeline.analysis_model import model_from_bundle

    model = model_from_bundle(built[0], device="cpu")
    assert model.heads["cells"].classes == list(CLASS_NAMES)
    assert model.heads["tiles"].classes == ["NILM", "LSIL", "HSIL"]
    (cells,) = classifiers_of_model(model)
    assert cells.abnormal_classes == ["LSIL", "HSIL"]


def test_the_pipeline_analyses_an_unseen_smear_with_both_heads(built, small_smear, tmp_path):
    from core.cells import CellOptions
    from core.pipeline.analysis_model import model_from_bundle
    from core.pipeline.analyze import SlideAnalysis

    model = model_from_bundle(built[0], device="cpu")
    result = SlideAnalysis(small_smear.path, model, tmp_path, batch_size=16,
                           cells=CellOptions(core_px=512, index=False)).run()
    assert result.status == "complete" and result.cells["status"] == "complete"
    tile_probs = result.tile_outputs["tiles.probs"]
    assert tile_probs.shape == (len(result.tiles), 3)
    np.testing.assert_allclose(tile_probs.sum(axis=1), 1.0, rtol=1e-5)
    assert result.summary["tiles.tile_counts"].keys() == {"NILM", "LSIL", "HSIL"}
    table = result.read_cells().table
    assert len(table) >= 0.6 * len(small_smear.features) > 10
    probs = table.heads["cells"]["probs"]
    assert probs.shape == (len(table), len(CLASS_NAMES))
    np.testing.assert_allclose(table.heads["cells"]["abnormality"], probs[:, 3] + probs[:, 4], atol=1e-5)


def test_readme_says_what_it_is_and_reports_the_held_out_numbers(built):
    folder = built[0]
    readme = (folder / "README.txt").read_text()
    report = json.loads((folder / "report.json").read_text())
    assert "NOT FOR DIAGNOSIS" in readme and "synthetic" in readme
    cells, tiles = report["held_out"]["cells"], report["held_out"]["tiles"]
    assert cells["n"] > 10 and cells["abnormal_cells"] > 0 and tiles["n"] > 5
    for value in (cells["balanced_accuracy"], cells["auroc_abnormal_vs_normal"], tiles["balanced_accuracy"]):
        assert 0.0 <= value <= 1.0
    assert f"balanced accuracy {cells['balanced_accuracy']:.3f}" in readme
    assert f"AUROC abnormal (LSIL/HSIL) vs normal {cells['auroc_abnormal_vs_normal']:.3f}" in readme
    held_seeds = {s["seed"] for s in report["recipe"]["held_out"]}
    train_seeds = {s["seed"] for s in report["recipe"]["train"]}
    assert not held_seeds & train_seeds and 1 not in held_seeds | train_seeds  # never the viewer's demo slide
    assert report["pretraining"]["iterations"] == report["pretraining"]["planned_iterations"] == 4


def test_an_existing_bundle_is_refused_without_force(built, capsys):
    from cervixfm_app.cli import main
    from training.demo_bundle import build_demo_bundle

    folder = built[0]
    before = (folder / "bundle.json").read_bytes()
    with pytest.raises(CervixFMError, match="already holds a model bundle"):
        build_demo_bundle(folder, quick=True)
    assert main(["demo-bundle", "--quick", "--out", str(folder)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (folder / "bundle.json").read_bytes() == before


def test_a_folder_of_other_files_is_never_replaced(tmp_path, capsys):
    from cervixfm_app.cli import main

    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo-bundle", "--quick", "--force", "--out", str(tmp_path)]) == 2
    assert "not a model bundle" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cancel_during_the_analysis_keeps_the_old_bundle_and_leaves_nothing(built, tmp_path):
    """Cancelled while analysing (after pretraining): a forced rebuild over a copy of the bundle stops, the copy is
    untouched and no staging folder remains; progress only moves forward."""
    import shutil

    from training.demo_bundle import DemoBundleCancelled, build_demo_bundle

    target = tmp_path / "bundles" / "demo"
    shutil.copytree(built[0], target)
    before = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    stop = threading.Event()
    seen: list[tuple[float, str]] = []

    def progress(fraction: float, message: str) -> None:
        seen.append((fraction, message))
        if message.startswith("analysing smear 2"):
            stop.set()

    work = tmp_path / "work"
    with pytest.raises(DemoBundleCancelled):
        build_demo_bundle(target, quick=True, force=True, work_dir=work, progress=progress, cancel=stop.is_set)
    assert {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["demo"]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and 0.65 <= fractions[-1] < 0.97
    assert not any(m.startswith("analysing smear 3") for _, m in seen)
    assert (work / "pretrain" / "teacher_backbone.pth").is_file()  # a kept work folder can seed a rebuild


def test_cancel_before_any_work_writes_nothing(tmp_path):
    from training.demo_bundle import DemoBundleCancelled, build_demo_bundle

    with pytest.raises(DemoBundleCancelled):
        build_demo_bundle(tmp_path / "demo", quick=True, cancel=lambda: True)
    assert list(tmp_path.iterdir()) == []
