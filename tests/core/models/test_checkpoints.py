"""Checkpoint layouts, architecture inference, conversions and bad files."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle

import pytest
import torch

from core.errors import CheckpointError, ConfigError
from core.models import build_vit, get_preset, load_backbone
from core.models.checkpoint_io import save_weights_file
from core.models.layouts import (
    export_cervixfm,
    export_teacher,
    export_timm,
    import_timm,
    model_to_canonical,
)


def _random_model(preset: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_vit(get_preset(preset).config).eval()
    with torch.no_grad():  # non-trivial values everywhere, so a wrong mapping cannot go unnoticed
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model


def _features(model, seed=1):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return model(x)


@pytest.fixture(scope="module")
def tiny():
    model = _random_model("cervixfm-tiny")
    return model, model_to_canonical(model.state_dict()), _features(model)


def test_vit_large_key_list_loads_strictly_as_cervixfm(golden_dir, tmp_path):
    spec = json.loads((golden_dir / "vit_large_cervixfm_keys.json").read_text())
    shapes = spec if isinstance(spec, dict) and "keys" not in spec else spec["keys"]
    if isinstance(shapes, list):
        shapes = {item[0]: item[1] for item in shapes} if isinstance(shapes[0], list) else \
            {item["key"]: item["shape"] for item in shapes}
    assert len(shapes) == 343
    state = {k: torch.zeros(v) for k, v in shapes.items()}
    path = tmp_path / "CervixFM.pth"
    torch.save(state, path)
    del state
    loaded = load_backbone(path)
    assert loaded.preset is not None and loaded.preset.name == "cervixfm-vitl16"
    assert loaded.report.ok and loaded.layout == "cervixfm"
    assert sum(p.numel() for p in loaded.model.parameters()) == 303_778_048
    assert loaded.config == get_preset("cervixfm-vitl16").config
    assert set(loaded.model.state_dict()) == set(shapes)


def test_cervixfm_timm_cervixfm_round_trip_is_identical(tiny):
    model, canonical, _ = tiny
    original = model.state_dict()
    timm_sd = export_timm(canonical)
    assert "mask_token" not in timm_sd and "blocks.0.mlp.fc1.weight" in timm_sd
    back = export_cervixfm(import_timm(timm_sd, mask_token=canonical["mask_token"]), block_chunks=4)
    assert set(back) == set(original)
    for key, value in original.items():
        assert torch.equal(back[key], value), key


@pytest.mark.parametrize("layout", ["cervixfm", "hub", "teacher", "timm", "safetensors", "ddp-teacher"])
def test_every_layout_gives_identical_features(tiny, tmp_path, layout):
    model, canonical, want = tiny
    if layout == "cervixfm":
        state = export_cervixfm(canonical, 4)
    elif layout == "hub":
        state = export_cervixfm(canonical, 0)
    elif layout == "teacher":
        state = export_teacher(canonical, 4)
        state["teacher"].update({"dino_head.mlp.0.weight": torch.zeros(8, 96), "dino_head.last_layer.weight_g": torch.ones(4, 1)})
    elif layout == "ddp-teacher":
        state = {"model": {f"teacher.module.backbone.{k}": v for k, v in export_cervixfm(canonical, 0).items()}
                 | {f"student.module.backbone.{k}": v * 0 for k, v in export_cervixfm(canonical, 0).items()},
                 "iteration": torch.tensor(5)}
    elif layout == "timm":
        state = export_timm(canonical)
    else:
        state = export_cervixfm(canonical, 4)
    path = tmp_path / ("w.safetensors" if layout == "safetensors" else "w.pth")
    save_weights_file(state, path)
    loaded = load_backbone(path)
    assert loaded.preset.name == "cervixfm-tiny"
    torch.testing.assert_close(_features(loaded.model), want, rtol=0, atol=0)


def test_register_model_in_timm_layout_gives_same_features(golden_dir, tmp_path):
    ref = load_backbone(golden_dir / "dinov2_reg_tiny.pth")
    canonical = model_to_canonical(ref.model.state_dict())
    timm_sd = export_timm(canonical)
    assert "reg_token" in timm_sd and timm_sd["pos_embed"].shape[1] == 37 * 37
    save_weights_file(timm_sd, tmp_path / "timm.pth")
    loaded = load_backbone(tmp_path / "timm.pth")
    assert loaded.layout == "timm" and loaded.config.num_register_tokens == 4
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), ref.model(x), rtol=1e-5, atol=1e-5)


def test_published_yaml_matches_preset():
    from core.models.config import ViTConfig
    from tests_support import REPO_ROOT  # noqa: F401  (path helper, see tests/tests_support.py)

    cfg = ViTConfig.from_file(REPO_ROOT / "resources" / "configs" / "cervixfm_vitl16.yaml")
    preset = get_preset("cervixfm-vitl16").config
    assert cfg.replace(drop_path_rate=0.0) == preset


def test_unknown_width_needs_a_config(tmp_path):
    from core.models.config import ViTConfig

    cfg = ViTConfig(embed_dim=80, depth=2, num_heads=5, patch_size=16, ffn_layer="mlp")
    torch.save(build_vit(cfg).state_dict(), tmp_path / "odd.pth")
    with pytest.raises(ConfigError, match="num_heads"):
        load_backbone(tmp_path / "odd.pth")
    loaded = load_backbone(tmp_path / "odd.pth", config={"num_heads": 5, "embed_dim": 80, "depth": 2, "ffn_layer": "mlp"})
    assert loaded.config.num_heads == 5


# ------------------------------------------------------------------------------------------------- bad input
def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="notes.pth"):
        load_backbone(path)


def test_image_file_is_not_a_checkpoint(tmp_path):
    from PIL import Image

    path = tmp_path / "cell.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(CheckpointError, match="cell.png"):
        load_backbone(path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(tiny, tmp_path, suffix):
    _, canonical, _ = tiny
    path = tmp_path / f"w{suffix}"
    save_weights_file(export_cervixfm(canonical, 4), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        load_backbone(path)


def test_different_architecture_is_refused_with_a_report(tiny, tmp_path):
    _, canonical, _ = tiny
    path = tmp_path / "tiny.pth"
    save_weights_file(export_cervixfm(canonical, 4), path)
    with pytest.raises(CheckpointError) as info:
        load_backbone(path, preset="cervixfm-vitl16")
    text = str(info.value)
    assert "cervixfm-vitl16" in text and "missing from the file" in text and "different shapes" in text
    assert "pos_embed: [1, 197, 96] vs [1, 197, 1024]" in text


def test_non_strict_load_reports_and_keeps_going(tiny, tmp_path):
    _, canonical, _ = tiny
    state = export_cervixfm(canonical, 4)
    del state["blocks.3.3.mlp.w3.weight"]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    save_weights_file(state, path)
    with pytest.raises(CheckpointError, match="w3.weight"):
        load_backbone(path, preset="cervixfm-tiny")
    loaded = load_backbone(path, preset="cervixfm-tiny", strict=False)
    assert loaded.report.missing == ["blocks.3.3.mlp.w3.weight"] and loaded.report.unexpected == ["extra.weight"]


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(1), "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match="run code"):
        load_backbone(path)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "old.pkl"
    with open(path, "wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(CheckpointError):
        load_backbone(path)


def test_state_dict_of_another_network(tmp_path):
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match="no ViT backbone"):
        load_backbone(tmp_path / "resnet.pth")


@pytest.mark.parametrize("case", ["missing", "folder", "empty"])
def test_paths_that_are_not_files(tmp_path, case):
    path = tmp_path / "x.pth"
    if case == "folder":
        path.mkdir()
    elif case == "empty":
        path.touch()
    with pytest.raises(CheckpointError, match="x.pth"):
        load_backbone(path)


def test_input_size_follows_the_request_and_the_patch_grid(golden_dir):
    from core.errors import ConfigError
    from core.models.loader import input_size_note, resolve_input_size

    ckpt = golden_dir / "cervixfm_tiny.pth"
    loaded = load_backbone(ckpt)
    assert loaded.input_size == 224 and loaded.preprocessing().size == 224 and input_size_note(loaded) is None
    small = load_backbone(ckpt, input_size=112)
    assert small.preprocessing().size == 112 and small.preprocessing(64).size == 64
    assert load_backbone(ckpt, input_size="trained").input_size == small.config.img_size == 224
    loaded.config = dataclasses.replace(loaded.config, img_size=112)  # as a backbone pretrained on 112-px crops
    assert "trained at 112 px and is fed 224-px crops" in input_size_note(loaded)
    assert resolve_input_size("trained", loaded.config) == 112
    for bad in ("120", "0", "large"):
        with pytest.raises(ConfigError):
            resolve_input_size(bad, loaded.config)
