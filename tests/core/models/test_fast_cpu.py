"""The optional bf16 CPU path: same outputs as fp32 up to bf16 rounding, same shapes and dtypes, model untouched."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from core.models import build_vit, get_preset
from core.models.fast_cpu import CpuBf16Backbone, optimise_for_cpu


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_vit(get_preset("vit-test16").config).eval()
    # Layer scale 1 instead of 1e-5, so that the blocks shape the features: with the initial 1e-5 every image
    # gets almost the same CLS token and any numerical path would look faithful.
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(".gamma"):
                p.fill_(1.0)
    return m


@pytest.fixture(scope="module")
def images():
    """Four unlike inputs (noise of several scales and offsets, a ramp): a random model tells them apart."""
    torch.manual_seed(1)
    x = torch.randn(4, 3, 224, 224) * torch.tensor([0.5, 1.0, 2.0, 1.0]).view(4, 1, 1, 1)
    x[3] -= 1.0
    x[1] = torch.linspace(-2, 2, 224).view(1, 1, 224)
    return x


@pytest.fixture(scope="module")
def bf16(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # CPUs without native bf16 warn; the numbers still hold
        return optimise_for_cpu(model, "bf16")


def test_fp32_mode_is_the_model_itself(model):
    assert optimise_for_cpu(model, "fp32") is model
    assert optimise_for_cpu(model) is model


def test_unknown_mode_is_a_config_error(model):
    with pytest.raises(ConfigError, match="int4"):
        optimise_for_cpu(model, "int4")


def test_features_depend_on_the_image(model, images):
    """Guards the cosine tests below (> 0.999) against a degenerate model whose features ignore the input."""
    with torch.inference_mode():
        cls = F.normalize(model(images), dim=-1)
    assert (cls @ cls.T)[~torch.eye(len(cls), dtype=torch.bool)].max() < 0.995


def test_bf16_cls_features_match_fp32(model, bf16, images):
    with torch.inference_mode():
        ref, out = model(images), bf16(images)
    assert out.shape == ref.shape == (4, model.embed_dim)
    assert out.dtype == torch.float32
    assert F.cosine_similarity(out, ref, dim=-1).min() > 0.999


def test_bf16_forward_features_and_intermediate_layers(model, bf16, images):
    with torch.inference_mode():
        ref, out = model.forward_features(images), bf16.forward_features(images)
        ref_layers = model.get_intermediate_layers(images, n=2, reshape=True, return_class_token=True)
        out_layers = bf16.get_intermediate_layers(images, n=2, reshape=True, return_class_token=True)
        training = bf16(images, is_training=True)
    for key in ("x_norm_clstoken", "x_norm_patchtokens", "x_prenorm"):
        assert out[key].shape == ref[key].shape and out[key].dtype == torch.float32
        cos = F.cosine_similarity(out[key].flatten(0, -2), ref[key].flatten(0, -2), dim=-1)
        assert cos.min() > 0.999, key
    assert set(training) == set(ref)
    for (o_patch, o_cls), (r_patch, r_cls) in zip(out_layers, ref_layers):
        assert o_patch.shape == r_patch.shape == (4, model.embed_dim, 14, 14)
        assert o_patch.dtype == o_cls.dtype == torch.float32
        assert F.cosine_similarity(o_patch, r_patch, dim=1).min() > 0.999
        assert F.cosine_similarity(o_cls, r_cls, dim=-1).min() > 0.999


def test_bf16_keeps_the_original_model_and_its_attributes(model, bf16):
    assert isinstance(bf16, CpuBf16Backbone)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    linear = [m for m in bf16.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and all(m.weight.dtype == torch.bfloat16 for m in linear)
    assert bf16.config is bf16.model.config and bf16.config == model.config
    assert bf16.patch_size == model.patch_size
    assert len(bf16.block_list()) == model.config.depth
    assert not bf16.training


def test_bf16_inplace_converts_the_given_model():
    torch.manual_seed(0)
    m = build_vit(get_preset("vit-test16").config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        wrapped = optimise_for_cpu(m, "bf16", inplace=True)
    assert wrapped.model is m
    assert m.blocks[0][0].attn.qkv.weight.dtype == torch.bfloat16
