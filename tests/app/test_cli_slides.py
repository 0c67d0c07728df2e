"""``cervixfm demo-slide`` and ``cervixfm info``, in-process and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tests_support import REPO_ROOT

from cervixfm_app.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "demo.tiff"
    rc = main(["demo-slide", str(out), "--width", "2048", "--height", "1536", "--seed", "3",
               "--abnormal-fraction", "0.3", "--cellularity", "0.7", "--quiet"])
    assert rc == 0
    return out


def test_demo_slide_writes_slide_and_ground_truth(demo, capsys):
    assert demo.exists() and demo.with_suffix(".geojson").exists()
    data = json.loads(demo.with_suffix(".geojson").read_text(encoding="utf-8"))
    assert data["type"] == "FeatureCollection" and data["features"]


def test_demo_slide_summary_json(tmp_path, capsys):
    out = tmp_path / "j.tiff"
    assert main(["demo-slide", str(out), "--width", "1024", "--height", "1024", "--seed", "1", "--json",
                 "--no-geojson", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["width"] == 1024 and summary["geojson"] is None and summary["tiles"] == 4 + 1
    assert not out.with_suffix(".geojson").exists()


def test_info_text(demo, capsys):
    assert main(["info", str(demo)]) == 0
    out = capsys.readouterr().out
    assert "generic-tiff" in out and "2,048 x 1,536 px" in out and "0.2500 x 0.2500 µm/px (from the file)" in out
    assert "levels      3" in out


def test_info_json_and_override(demo, capsys):
    assert main(["info", str(demo), "--json", "--mpp", "0.5"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["width"] == 2048 and meta["height"] == 1536
    assert meta["mpp_x"] == 0.5 and meta["mpp_source"] == "user"
    assert [lv["downsample"] for lv in meta["levels"]] == [1.0, 2.0, 4.0]
    assert "properties" not in meta


def test_info_warns_about_missing_mpp(tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "snap.png"
    Image.new("RGB", (64, 48), (240, 240, 240)).save(path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ASSUMED" in out and "--mpp" in out


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.svs"
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err and "Traceback" not in err
    assert main(["demo-slide", str(tmp_path / "x.tiff"), "--width", "0", "--quiet"]) == 2
    assert main(["demo-slide", str(tmp_path / "no" / "dir" / "x.tiff"), "--width", "512", "--height", "512",
                 "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "cervixfm_app", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=300)


def test_subprocess_svs_round_trip(tmp_path):
    out = tmp_path / "demo.svs"
    proc = _run("demo-slide", str(out), "--width", "1024", "--height", "1024", "--seed", "4", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "ground truth" in proc.stdout
    proc = _run("info", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["vendor"] == "aperio" and meta["objective_power"] == 40.0
    assert set(meta["associated_images"]) == {"label", "macro", "thumbnail"}
    bad = tmp_path / "bad.svs"
    bad.write_text("not a slide")
    proc = _run("info", str(bad))
    assert proc.returncode == 2 and "not a slide" in proc.stderr and str(bad) in proc.stderr
