"""Slide analysis end to end on synthetic slides with a tiny backbone."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from core.errors import CervixFMError, SlideError
from core.pipeline.analysis_model import model_from_checkpoint
from core.pipeline.analyze import SlideAnalysis
from core.pipeline.feature_file import read_features
from slide_fixtures import synthetic
from tests_support import REPO_ROOT


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return synthetic(tmp_path_factory.mktemp("slides"), "smear.tiff", width=4096, height=4096, seed=3).path


@pytest.fixture(scope="module")
def model(golden_dir):
    return model_from_checkpoint(golden_dir / "cervixfm_tiny.pth", device="cpu")


@pytest.fixture(scope="module")
def reference(slide, model, tmp_path_factory):
    """An uninterrupted analysis, the yardstick for resumed and cancelled ones."""
    return SlideAnalysis(slide, model, tmp_path_factory.mktemp("ref"), batch_size=8).run()


def test_features_equal_tile_by_tile_computation(slide, model, reference):
    fs = read_features(reference.features_path)
    analysis = SlideAnalysis(slide, model, reference.folder.parent)
    assert len(fs) == len(analysis.grid) > 10 and reference.status == "complete"
    want = np.concatenate([model.encode([analysis.grid.read(i)])["features"] for i in range(len(analysis.grid))])
    np.testing.assert_allclose(fs.features, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fs.coords, analysis.grid.coords)
    assert fs.attrs["encoder"] == "cervixfm-tiny" and fs.attrs["checkpoint_sha256"] == model.sha256
    assert fs.attrs["patch_size"] == 224 and fs.attrs["patch_size_level0"] == 448 and fs.attrs["target_mpp"] == 0.5
    assert 0 < reference.summary["cell_area_fraction"] < 0.5
    assert reference.summary["tiles_cell_area"] < reference.summary["tiles_total_grid"]


def test_second_analysis_reuses_the_result(slide, model, reference):
    again = SlideAnalysis(slide, model, reference.folder.parent).run()
    assert again.provenance["created"] == reference.provenance["created"]


def _same_features(a, b):
    fa, fb = read_features(a), read_features(b)
    np.testing.assert_array_equal(fa.coords, fb.coords)
    np.testing.assert_allclose(fa.features, fb.features, rtol=1e-6, atol=1e-6)


def test_cancel_is_prompt_leaves_a_valid_file_and_resumes(slide, model, reference, tmp_path):
    analysis = SlideAnalysis(slide, model, tmp_path, batch_size=4)
    calls = []

    def progress(p):
        calls.append(p.done)
        if len(calls) == 1:
            analysis.cancel()

    t0 = time.perf_counter()
    partial = analysis.run(progress)
    assert partial.status == "cancelled" and len(calls) == 1 and time.perf_counter() - t0 < 30
    fs = read_features(partial.features_path)
    assert len(fs) == calls[0] == 4 and fs.attrs["status"] == "cancelled"
    resumed = SlideAnalysis(slide, model, tmp_path, batch_size=4).run()
    assert resumed.status == "complete"
    _same_features(resumed.features_path, reference.features_path)


def test_priority_region_is_finished_first(slide, model, tmp_path):
    analysis = SlideAnalysis(slide, model, tmp_path, batch_size=4, readers=1)
    boxes = analysis.boxes
    region = (2048, 2048, 4096, 4096)
    inside = {i for i, (x, y, w, h) in enumerate(boxes) if x < 4096 and x + w > 2048 and y < 4096 and y + h > 2048}
    assert 0 < len(inside) < len(boxes)
    order: list[int] = []
    analysis.prioritise_region(*region)
    analysis.run(lambda p: order.extend(p.batch_indices.tolist()))
    assert set(order[:len(inside)]) == inside


def test_kill_9_then_resume_gives_the_same_file(golden_dir, tmp_path):
    big = synthetic(tmp_path, "big.tiff", width=8192, height=8192, seed=5).path
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "cervixfm_app", "analyze", str(big), "--checkpoint",
           str(golden_dir / "cervixfm_tiny.pth"), "--out", str(tmp_path / "run"), "--batch-size", "2", "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = tmp_path / "run" / "big" / ".work"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(work.glob("part-*.npz"))) < 5:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    parts = len(list(work.glob("part-*.npz")))
    assert parts >= 5 and not (tmp_path / "run" / "big" / "result.json").exists(), "killed too late"
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    subprocess.run(cmd[:-6] + ["--out", str(tmp_path / "clean"), "--batch-size", "8", "--device", "cpu"],
                   env=env, check=True, capture_output=True)
    _same_features(tmp_path / "run" / "big" / "features.h5", tmp_path / "clean" / "big" / "features.h5")
    assert not work.exists()


def test_disk_full_loses_nothing_and_resumes(slide, model, reference, tmp_path, monkeypatch):
    import core.pipeline.journal as journal_module

    real_savez = np.savez
    calls = {"n": 0}

    def flaky_savez(handle, **arrays):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savez(handle, **arrays)

    monkeypatch.setattr(journal_module.np, "savez", flaky_savez)
    with pytest.raises(CervixFMError, match="Disk full"):
        SlideAnalysis(slide, model, tmp_path, batch_size=4).run()
    monkeypatch.setattr(journal_module.np, "savez", real_savez)
    analysis = SlideAnalysis(slide, model, tmp_path, batch_size=4)
    resumed = analysis.run()
    _same_features(resumed.features_path, reference.features_path)


def test_unreadable_tile_is_logged_skipped_and_recorded(slide, model, tmp_path, caplog):
    analysis = SlideAnalysis(slide, model, tmp_path, batch_size=4)
    real_read = analysis.grid.read

    def read(i):
        if i == 2:
            raise SlideError(f"{slide.name}: tile at level 1 is damaged (JPEG error)")
        return real_read(i)

    analysis.grid.read = read
    result = analysis.run()
    assert list(result.skipped) == [2] and "damaged" in result.skipped[2]
    assert 2 not in result.tile_outputs["grid_index"] and len(result.tiles) == len(analysis.grid) - 1
    assert "tile 2 skipped" in caplog.text


def test_output_folder_that_cannot_be_created(slide, model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CervixFMError, match="Cannot create"):
        SlideAnalysis(slide, model, blocker / "out").run()


def test_unreadable_slide(model, tmp_path):
    fake = tmp_path / "scan.svs"
    fake.write_text("not a slide")
    with pytest.raises(SlideError, match="scan.svs"):
        SlideAnalysis(fake, model, tmp_path / "out")
