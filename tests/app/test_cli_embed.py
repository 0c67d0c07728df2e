"""``cervixfm embed`` end to end: features, order, names, and clear failures."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cervixfm_app.cli import main
from core.models import load_backbone
from core.models.preprocessing import Preprocessing
from tests_support import REPO_ROOT


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cells"
    (folder / "sub").mkdir(parents=True)
    arrays = {}
    for name in ["b.png", "a.png", "sub/c.jpg"]:
        arr = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / name, quality=100)
        arrays[name] = np.asarray(Image.open(folder / name).convert("RGB"))
    big = rng.integers(0, 255, (300, 260, 3), dtype=np.uint8)
    Image.fromarray(big).save(folder / "d.png")
    arrays["d.png"] = big
    (folder / "readme.txt").write_text("not an image")
    return folder, arrays


def _run_cli(*args, cwd=REPO_ROOT):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "cervixfm_app", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_embed_folder_writes_sorted_features_equal_to_direct_model(golden_dir, images, tmp_path):
    folder, arrays = images
    ckpt = golden_dir / "cervixfm_tiny.pth"
    out = tmp_path / "features.npy"
    assert main(["embed", "--checkpoint", str(ckpt), "--out", str(out), "--batch-size", "3", str(folder)]) == 0
    names = (tmp_path / "features.txt").read_text().splitlines()
    assert names == ["a.png", "b.png", "d.png", "sub/c.jpg"]
    feats = np.load(out)
    assert feats.shape == (4, 96) and feats.dtype == np.float32
    model = load_backbone(ckpt).model
    prep = Preprocessing()
    x = prep.to_tensor([prep.fit(arrays[n]) for n in names])
    with torch.inference_mode():
        want = model(x).numpy()
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-5)
    # images of the model size go in unchanged; others are resized and centre-cropped to 224
    assert prep.fit(arrays["a.png"]) is arrays["a.png"] and prep.fit(arrays["d.png"]).shape == (224, 224, 3)


def test_embed_real_cell_crops(golden_dir, cell_crops_dir, tmp_path):
    files = sorted(cell_crops_dir.glob("*.png"))[:6]
    out = tmp_path / "cells.npy"
    assert main(["embed", "--checkpoint", str(golden_dir / "cervixfm_tiny.pth"), "--out", str(out),
                 *map(str, files)]) == 0
    feats = np.load(out)
    assert feats.shape == (6, 96) and np.isfinite(feats).all()
    assert (tmp_path / "cells.txt").read_text().splitlines() == sorted(map(str, files))


@pytest.mark.parametrize("problem", ["not-a-checkpoint", "truncated", "runs-code", "wrong-architecture",
                                     "missing-input", "missing-checkpoint"])
def test_embed_fails_clearly(golden_dir, images, tmp_path, problem):
    folder, _ = images
    ckpt = tmp_path / "model.pth"
    extra = []
    if problem == "not-a-checkpoint":
        ckpt.write_text("hello")
    elif problem == "truncated":
        data = (golden_dir / "cervixfm_tiny.pth").read_bytes()
        ckpt.write_bytes(data[:1000])
    elif problem == "runs-code":
        torch.save({"x": _Evil()}, ckpt)
    elif problem == "wrong-architecture":
        ckpt = golden_dir / "cervixfm_tiny.pth"
        extra = ["--preset", "cervixfm-vitl16"]
    elif problem == "missing-input":
        ckpt = golden_dir / "cervixfm_tiny.pth"
        folder = tmp_path / "nowhere"
    elif problem == "missing-checkpoint":
        ckpt = tmp_path / "absent.pth"
    out = tmp_path / "f.npy"
    result = _run_cli("embed", "--checkpoint", str(ckpt), "--out", str(out), *extra, str(folder), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("cervixfm embed: error:")
    assert not out.exists() and not (tmp_path / "f.txt").exists()
    assert not (tmp_path / "PWNED").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_embed_at_the_size_a_backbone_was_trained_at(images, tmp_path, capsys):
    """A backbone pretrained at 112 px (as the small_data preset does) embeds at 224 px by default, with a note, and
    at its own size with ``--size trained``, which equals resizing the images to 112 px first."""
    from core.models import build_vit
    from core.models.config import ViTConfig

    folder, arrays = images
    torch.manual_seed(0)
    config = ViTConfig(embed_dim=48, depth=2, num_heads=2, img_size=112, patch_size=16, ffn_layer="mlp",
                       init_values=1.0)  # unit layer scale: features that depend on the image
    model = build_vit(config).eval()
    ckpt = tmp_path / "small.pth"
    torch.save(model.state_dict(), ckpt)
    (tmp_path / "small.json").write_text(json.dumps(dataclasses.asdict(config)))
    common = ["embed", "--checkpoint", str(ckpt), "--config", str(tmp_path / "small.json"), str(folder)]

    assert main([*common, "--out", str(tmp_path / "default.npy")]) == 0
    assert "trained at 112 px and is fed 224-px crops" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "own.npy"), "--size", "trained"]) == 0
    assert "this backbone was trained at" not in capsys.readouterr().err
    names = (tmp_path / "own.txt").read_text().splitlines()
    prep = Preprocessing(size=112)
    with torch.inference_mode():
        want = model(prep.to_tensor([prep.fit(arrays[n]) for n in names])).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "own.npy"), want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.load(tmp_path / "default.npy"), want, atol=1e-3)

    for bad, message in (("100", "multiple of this backbone's patch size"), ("big", "number of pixels or 'trained'")):
        assert main([*common, "--out", str(tmp_path / "bad.npy"), "--size", bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.npy").exists()
