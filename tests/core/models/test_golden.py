"""The backbone reproduces the published reference model's outputs, loaded through the public loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.models import load_backbone

MODELS = ["cervixfm_tiny", "dinov2_reg_tiny"]
INPUTS = ["square", "wide"]


def _outputs(model, x):
    with torch.inference_mode():
        out = {"forward": model(x)}
        ff = model.forward_features(x)
        for key in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm"):
            out[key] = ff[key]
        layers = model.get_intermediate_layers(x, n=2, reshape=True, return_class_token=True, norm=True)
        for i, (patch, cls) in enumerate(layers):
            out[f"intermediate{i}.patch"] = patch
            out[f"intermediate{i}.cls"] = cls
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("with_config", [True, False], ids=["config", "inferred"])
@pytest.mark.parametrize("name", MODELS)
def test_reproduces_reference_outputs(golden_dir, name, with_config):
    spec = json.loads((golden_dir / f"{name}.json").read_text())
    loaded = load_backbone(golden_dir / f"{name}.pth", config=spec if with_config else None)
    ref = np.load(golden_dir / f"{name}.npz")
    names = [k for k in spec["outputs"] if not k.endswith(".input")]
    checked = 0
    for inp in INPUTS:
        ours = _outputs(loaded.model, torch.from_numpy(ref[f"{inp}.input"]))
        for key in (k for k in names if k.startswith(inp + ".")):
            want, got = ref[key], ours[key.split(".", 1)[1]]
            assert got.shape == want.shape, key
            if want.size:
                err = np.abs(got - want).max()
                assert err <= 1e-4 * np.abs(want).max(), f"{name} {key}: max error {err}"
            checked += 1
    assert checked == len(names)


def test_constructor_arguments_are_understood(golden_dir):
    spec = json.loads((golden_dir / "dinov2_reg_tiny.json").read_text())["constructor"]
    loaded = load_backbone(golden_dir / "dinov2_reg_tiny.pth", config=spec)
    c = loaded.config
    assert (c.embed_dim, c.depth, c.num_heads, c.patch_size, c.img_size) == (64, 3, 2, 14, 518)
    assert c.num_register_tokens == 4 and c.ffn_layer == "mlp" and loaded.layout == "dinov2-hub"
