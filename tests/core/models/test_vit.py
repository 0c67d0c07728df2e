"""Behaviour of the ViT beyond the parity vectors: masking, layer selection, chunking, input checks."""

from __future__ import annotations

import pytest
import torch

from core.models import build_vit, get_preset
from core.models.attention import xformers_runs
from core.models.layouts import export_cervixfm, model_to_canonical


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_vit(get_preset("cervixfm-tiny").config).eval()


def test_masked_patches_become_the_mask_token(model):
    with torch.no_grad():
        model.mask_token.normal_()
    x = torch.randn(1, 3, 224, 224)
    masks = torch.zeros(1, 196, dtype=torch.bool)
    masks[0, [0, 5, 100]] = True
    tokens = model.prepare_tokens(x, masks)
    pos = model.pos_embed[:, 1:]
    for i in (0, 5, 100):
        torch.testing.assert_close(tokens[0, 1 + i], model.mask_token[0] + pos[0, i])
    unmasked = model.prepare_tokens(x)
    assert torch.equal(tokens[0, 2], unmasked[0, 2])


def test_intermediate_layers_by_index_equal_last_n(model):
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        last_two = model.get_intermediate_layers(x, n=2)
        by_index = model.get_intermediate_layers(x, n=[2, 3])
        prenorm = model.forward_features(x)["x_prenorm"]
        raw_last = model.get_intermediate_layers(x, n=1, norm=False)[0]
    for a, b in zip(last_two, by_index):
        assert torch.equal(a, b)
    torch.testing.assert_close(raw_last, prenorm[:, 1:])
    with pytest.raises(ValueError):
        model.get_intermediate_layers(x, n=[7])


def test_chunked_and_flat_models_agree(model):
    flat = build_vit(get_preset("cervixfm-tiny").config.replace(block_chunks=0)).eval()
    flat.load_state_dict(export_cervixfm(model_to_canonical(model.state_dict()), 0))
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(flat(x), model(x))
    assert len(model.block_list()) == 4 and len(model.blocks) == 4


def test_non_square_and_larger_inputs_interpolate(model):
    with torch.inference_mode():
        out = model.forward_features(torch.randn(1, 3, 160, 320))
    assert out["x_norm_patchtokens"].shape == (1, 10 * 20, 96)


def test_sizes_not_multiple_of_patch_are_rejected(model):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.randn(1, 3, 230, 224))


def test_multi_crop_list_and_drop_path_only_in_training():
    cfg = get_preset("vit-test16").config.replace(drop_path_rate=0.5)
    m = build_vit(cfg)
    crops = [torch.randn(2, 3, 224, 224), torch.randn(3, 3, 96, 96)]
    outs = m.forward_features(crops)
    assert [o["x_norm_clstoken"].shape[0] for o in outs] == [2, 3]
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(crops[0]), m(crops[0]))


def test_backbone_gradients_flow():
    m = build_vit(get_preset("vit-test16").config)
    m(torch.randn(2, 3, 224, 224)).sum().backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if n != "mask_token")


@pytest.mark.skipif(not (torch.cuda.is_available() and xformers_runs("cuda", torch.float32, 24)),
                    reason="needs CUDA and an xformers that runs on it")
def test_xformers_and_sdpa_agree_on_gpu(model):
    from core.models.attention import Attention

    gpu = model.cuda()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    with torch.inference_mode():
        Attention.use_xformers = True
        a = gpu(x)
        Attention.use_xformers = False
        b = gpu(x)
        Attention.use_xformers = True
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    model.cpu()
