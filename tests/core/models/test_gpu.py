"""CUDA behaviour: golden parity, xformers against SDPA, mixed precision, device choice and pretraining on a GPU.

Why a file of its own: the CPU suite never reaches the GPU-only paths (xformers kernels, TF32, fp16 autocast with a
grad scaler, ``--device auto`` picking CUDA). Everything here is skipped, with the reason, where PyTorch sees no CUDA
GPU; the xformers cases are skipped where xformers cannot be imported and the rest still run.
``benchmarks/device_check.sh`` runs this file on a rented GPU machine.

Random-init ViT-L weights have DINOv2's layer scale of 1e-5, so every block barely touches the residual stream and
any kernel or precision "agrees". The ViT-L checks therefore use "stress" weights (every layer-scale gamma 0.1, as
``benchmarks/backbone.py`` does), where the CLS feature clearly depends on the image (mean cosine between different
crops' features about 0.92 on CPU), on real cell crops when they are present.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.models import attention, build_vit, get_preset, load_backbone
from core.models.attention import Attention, xformers_available, xformers_runs

# The golden helpers (model list, inputs, output collection) come from the CPU parity test, not a copy of it.
from test_golden import INPUTS, MODELS, _outputs
from tests_support import random_backbone

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def _xformers_runs_here() -> bool:
    return all(xformers_runs("cuda", dtype, 64) for dtype in (torch.float32, torch.bfloat16))


needs_xformers = pytest.mark.skipif(torch.cuda.is_available() and not _xformers_runs_here(),  # no GPU: reason above
                                    reason="xformers is not importable here, or it imports but cannot run on this GPU "
                                           "(e.g. built for another torch; pip install -e '.[gpu]'); SDPA cases run")

# golden parity: the bound of the CPU test. fp32 on CUDA differs from the CPU only in summation order (~1e-6 of the
# output scale over 3-4 blocks), while TF32 (10-bit mantissa, ~5e-4 relative per product) would leave it: the bound
# passes honest fp32 and catches TF32 leaking into the matmuls or the patch-embedding convolution.
GOLDEN_REL_TOL = 1e-4
# xformers vs SDPA in fp32 on ViT-L stress weights: exchanging the fused SDPA kernel for a plain softmax(QK^T)V
# changed the CLS/patch features by at most 3e-6 (values up to ~3) on CPU; 5e-4 leaves two orders of magnitude for
# GPU kernels' own orders while a wrong attention (scale, layout, masking) moves features by O(0.1-1).
KERNEL_FP32_ATOL = 5e-4
KERNEL_BF16_MIN_COS = 0.999  # both kernels see the same bf16 q, k, v; they differ in rounding only
AUTOCAST_MIN_COS = 0.99  # bf16/fp16 autocast vs fp32 (bf16 autocast on CPU gave 0.99995 on the same weights)
STRESS_LAYER_SCALE = 0.1
N_CROPS = 8
CUDA = torch.device("cuda")


# -------------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 for matmuls and cuDNN convolutions on or off, restored afterwards (PyTorch's defaults: matmul off,
    cuDNN convolutions on, so the patch embedding runs in TF32 unless told otherwise)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def autocast(precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


class OnCuda:
    """A model as ``test_golden._outputs`` uses it, running on CUDA: CPU tensors in, CPU tensors out."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.to(CUDA).eval()

    def __call__(self, x, **kwargs):
        return _to_cpu(self.model(x.to(CUDA), **kwargs))

    def forward_features(self, x, **kwargs):
        return _to_cpu(self.model.forward_features(x.to(CUDA), **kwargs))

    def get_intermediate_layers(self, x, *args, **kwargs):
        return _to_cpu(self.model.get_intermediate_layers(x.to(CUDA), *args, **kwargs))


@pytest.fixture()
def kernel(request, monkeypatch):
    """Selects the attention kernel (``Attention.use_xformers``) and counts xformers calls, so a test can check
    that the kernel it names really ran; the class-wide switch is restored afterwards."""
    use_xformers = request.param == "xformers"
    calls = {"xformers": 0}
    real = attention._xformers_attention
    if real is not None:
        def counting(*args, **kwargs):
            calls["xformers"] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(attention, "_xformers_attention", counting)
    monkeypatch.setattr(Attention, "use_xformers", use_xformers)
    yield request.param, calls


def _check_kernel_ran(kernel) -> None:
    name, calls = kernel
    if name == "xformers":
        assert calls["xformers"] > 0, "xformers was asked for but never called"
    else:
        assert calls["xformers"] == 0, "SDPA was asked for but xformers ran"


KERNELS = [pytest.param("xformers", marks=needs_xformers), "sdpa"]


# ---------------------------------------------------------------------------------------------- golden parity
@pytest.mark.parametrize("kernel", KERNELS, indirect=True)
@pytest.mark.parametrize("name", MODELS)
def test_golden_outputs_on_cuda_in_strict_fp32(golden_dir, name, kernel):
    spec = json.loads((golden_dir / f"{name}.json").read_text())
    loaded = load_backbone(golden_dir / f"{name}.pth", config=spec)
    ref = np.load(golden_dir / f"{name}.npz")
    names = [k for k in spec["outputs"] if not k.endswith(".input")]
    model = OnCuda(loaded.model)
    checked, errors = 0, {}
    with tf32(False):
        for inp in INPUTS:
            ours = _outputs(model, torch.from_numpy(ref[f"{inp}.input"]))
            for key in (k for k in names if k.startswith(inp + ".")):
                want, got = ref[key], ours[key.split(".", 1)[1]]
                assert got.shape == want.shape, key
                if want.size:
                    errors[key] = float(np.abs(got - want).max() / np.abs(want).max())
                checked += 1
    assert checked == len(names)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GOLDEN_REL_TOL, f"{name} ({kernel[0]}): {worst} off by {errors[worst]:.2e} of its scale"
    _check_kernel_ran(kernel)


# ------------------------------------------------------------------------------------------------- ViT-L
@pytest.fixture(scope="module")
def vitl_stress():
    """ViT-L/16 (preset cervixfm-vitl16), random init built on the GPU, layer scales set to 0.1."""
    torch.manual_seed(0)
    with torch.device(CUDA):
        model = build_vit(get_preset("cervixfm-vitl16").config)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith(".gamma"):
                p.fill_(STRESS_LAYER_SCALE)
    yield model.eval()
    del model
    torch.cuda.empty_cache()


def _blobs(n: int) -> list[np.ndarray]:
    """Smooth random colour images: the stand-in where the real crops are absent."""
    from PIL import Image

    rng = np.random.default_rng(0)
    return [np.asarray(Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((224, 224),
                                                                                              Image.BICUBIC))
            for _ in range(n)]


@pytest.fixture(scope="module")
def crops(request) -> torch.Tensor:
    """N_CROPS real cell crops (ImageNet-normalised, on the GPU), or smooth random images where they are absent."""
    from core.images import read_rgb
    from core.models.preprocessing import Preprocessing

    try:
        folder = request.getfixturevalue("cell_crops_dir")
        images = [read_rgb(p) for p in sorted(folder.glob("*.png"))[:N_CROPS]]
    except pytest.skip.Exception:
        images = []
    if len(images) < N_CROPS:
        images = _blobs(N_CROPS)
    return Preprocessing().to_tensor(images).to(CUDA)


def _features(model, x, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode(), autocast(precision):
        out = model.forward_features(x)
    return out["x_norm_clstoken"].float(), out["x_norm_patchtokens"].float()


def test_stress_features_depend_on_the_image(vitl_stress, crops):
    """The premise of the cosine checks below: different crops give clearly different fp32 CLS features."""
    with tf32(False):
        cls, _ = _features(vitl_stress, crops, "fp32")
    f = F.normalize(cls, dim=-1)
    off_diagonal = (f @ f.T)[~torch.eye(len(f), dtype=torch.bool, device=f.device)]
    assert off_diagonal.mean().item() < 0.98


@needs_xformers
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_xformers_and_sdpa_agree_on_vitl(vitl_stress, crops, precision, monkeypatch):
    outputs = {}
    with tf32(False):
        for use_xformers in (True, False):
            monkeypatch.setattr(Attention, "use_xformers", use_xformers)
            outputs[use_xformers] = _features(vitl_stress, crops, precision)
    (cls_x, patch_x), (cls_s, patch_s) = outputs[True], outputs[False]
    assert torch.isfinite(cls_x).all() and torch.isfinite(patch_x).all()
    if precision == "fp32":
        diff = max((cls_x - cls_s).abs().max().item(), (patch_x - patch_s).abs().max().item())
        assert diff <= KERNEL_FP32_ATOL, f"fp32 xformers vs SDPA: max abs difference {diff:.2e}"
    cos_cls = F.cosine_similarity(cls_x, cls_s, dim=-1).min().item()
    cos_patch = F.cosine_similarity(patch_x, patch_s, dim=-1).min().item()
    assert min(cos_cls, cos_patch) >= KERNEL_BF16_MIN_COS, f"{precision}: min cosine CLS {cos_cls}, patch {cos_patch}"


@pytest.mark.parametrize("kernel", KERNELS, indirect=True)
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_features_are_close_to_fp32(vitl_stress, crops, precision, kernel):
    with tf32(False):
        ref_cls, ref_patch = _features(vitl_stress, crops, "fp32")
        cls, patch = _features(vitl_stress, crops, precision)
    assert torch.isfinite(cls).all() and torch.isfinite(patch).all(), f"{precision} gave non-finite features"
    cos_cls = F.cosine_similarity(cls, ref_cls, dim=-1).min().item()
    cos_patch = F.cosine_similarity(patch, ref_patch, dim=-1).mean().item()
    assert cos_cls >= AUTOCAST_MIN_COS, f"{precision} ({kernel[0]}): min CLS cosine to fp32 {cos_cls:.5f}"
    assert cos_patch >= AUTOCAST_MIN_COS, f"{precision} ({kernel[0]}): mean patch cosine to fp32 {cos_patch:.5f}"
    _check_kernel_ran(kernel)


# ----------------------------------------------------------------------------------------- inference / embed
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A cervixfm-tiny backbone with layer scales 1 (image-dependent features), as a bare state dict on disk."""
    return random_backbone(tmp_path_factory.mktemp("tiny_backbone") / "tiny.pth", preset="cervixfm-tiny")


def test_auto_device_is_cuda_and_the_backbone_loads_there(tiny_checkpoint):
    from core.models.inference import select_device

    device = select_device("auto")
    assert device.type == "cuda"
    loaded = load_backbone(tiny_checkpoint, device=device)
    assert all(p.is_cuda for p in loaded.model.parameters())


@pytest.mark.parametrize("tf32_on", [False, True], ids=["strict-fp32", "pytorch-default"])
def test_embed_command_on_cuda_matches_cpu(tiny_checkpoint, cell_crops_dir, tmp_path, tf32_on):
    """``cervixfm embed --device auto`` (CUDA here) against ``--device cpu`` on real crops. Strict fp32: the same
    features up to summation order; PyTorch's default (TF32 in cuDNN convolutions, i.e. the patch embedding): close."""
    from cervixfm_app.cli import main as cervixfm

    folder = tmp_path / "crops"
    folder.mkdir()
    for path in sorted(cell_crops_dir.glob("*.png"))[:12]:
        shutil.copy(path, folder / path.name)
    features = {}
    with tf32(False):
        torch.backends.cudnn.allow_tf32 = tf32_on  # matmul TF32 stays off, as PyTorch ships it
        for device in ("auto", "cpu"):
            out = tmp_path / f"{device}.npy"
            assert cervixfm(["embed", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--device", device,
                             "--batch-size", "5", str(folder)]) == 0
            features[device] = np.load(out)
    gpu, cpu = features["auto"], features["cpu"]
    assert gpu.shape == cpu.shape == (12, 96) and np.isfinite(gpu).all()
    assert (tmp_path / "auto.txt").read_text() == (tmp_path / "cpu.txt").read_text()
    diff = float(np.abs(gpu - cpu).max())
    if not tf32_on:
        assert diff <= GOLDEN_REL_TOL * float(np.abs(cpu).max()), f"CUDA vs CPU features: max abs difference {diff:.2e}"
    cos = (gpu * cpu).sum(1) / (np.linalg.norm(gpu, axis=1) * np.linalg.norm(cpu, axis=1))
    assert cos.min() >= 0.9999, f"CUDA vs CPU: min cosine {cos.min():.6f} (max abs difference {diff:.2e})"


# ------------------------------------------------------------------------------------------------ pretraining
def _cuda_config(data, out, precision: str, *extra: str):
    from pretrain_support import tiny_config
    from training.pretrain.config import MODULES

    dtypes = [f"compute_precision.{role}.{m}.mixed_precision.param_dtype={precision}"
              for role in ("student", "teacher") for m in MODULES]
    return tiny_config(data, out, "train.device=cuda", "compute_precision.grad_scaler=true", *dtypes, *extra)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_pretraining_step_on_cuda(cell_crops_dir, tmp_path, precision):
    """One step by hand: the backbone computes in the asked dtype, fp16 losses go through an active grad scaler
    (bf16 needs none), losses are finite, the teacher gets no gradients."""
    from training.pretrain.meta_arch import SSLMetaArch
    from training.pretrain.schedules import build_schedules
    from training.pretrain.trainer import _make_scaler, build_data, make_optimizer, train_step

    cfg = _cuda_config(cell_crops_dir, tmp_path / "run", precision)
    dataset, collator, _, _ = build_data(cfg, 0, 1)
    batch = collator([dataset[i] for i in range(cfg.train.batch_size_per_gpu)])
    batch = {k: v.to(CUDA) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    meta = SSLMetaArch(cfg, CUDA)
    meta.train()
    optimizer = make_optimizer(meta, cfg)
    scaler = _make_scaler(meta, cfg)
    scaled = []
    if precision == "fp16":
        assert scaler is not None and scaler.is_enabled(), "fp16 on CUDA must train with a grad scaler"
        scale = scaler.scale
        scaler.scale = lambda loss: (scaled.append(loss.detach()), scale(loss))[1]
    else:
        assert scaler is None
    dtypes = set()
    qkv = meta.student["backbone"].block_list()[0].attn.qkv
    hook = qkv.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    values = build_schedules(cfg, 1).at(2)  # past the warm-up: lr > 0
    try:
        losses = train_step(meta, optimizer, scaler, batch, values, float(cfg.optim.clip_grad))
    finally:
        hook.remove()
    assert all(math.isfinite(v.item()) for v in losses.values()), losses
    assert dtypes == {torch.float16 if precision == "fp16" else torch.bfloat16}
    if precision == "fp16":
        assert len(scaled) == 1 and scaler.get_scale() > 1
    assert all(p.grad is None and not p.requires_grad for p in meta.teacher.parameters())
    assert any(p.grad is not None for p in meta.student.parameters())
    # (the EMA itself is checked on CPU in tests/training/pretrain/test_step.py; here an fp16 step whose scaled
    # gradients overflowed is legitimately skipped by the scaler, so the teacher may not move)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_pretraining_run_on_cuda_exports_a_backbone_that_loads(cell_crops_dir, tmp_path, precision):
    from training.pretrain.checkpoint import load_checkpoint
    from training.pretrain.trainer import run_pretraining

    cfg = _cuda_config(cell_crops_dir, tmp_path / "run", precision)
    result = run_pretraining(cfg, log=lambda message: None, progress=False)
    assert result.end_iteration == 4 and len(result.history) == 4
    assert all(math.isfinite(row["total_loss"]) for row in result.history)
    state = load_checkpoint(result.checkpoint)
    if precision == "fp16":
        assert state["scaler"] and state["scaler"]["scale"] > 0, "the checkpoint has no active grad scaler"
    else:
        assert state["scaler"] is None
    loaded = load_backbone(result.exports["backbone"], config=result.exports["config"], device=CUDA)
    with torch.inference_mode():
        out = loaded.model(torch.randn(2, 3, 64, 64, device=CUDA))
    assert out.shape == (2, loaded.config.embed_dim) and torch.isfinite(out).all()


def test_an_xformers_that_cannot_run_falls_back_to_sdpa(monkeypatch, caplog):
    """An installed xformers whose CUDA extension did not load (a wheel built for another torch) raises on every
    call; the backbone must then compute with SDPA, say so once, and give SDPA's numbers."""
    def broken(*args, **kwargs):
        raise NotImplementedError("No operator found for `memory_efficient_attention_forward`")

    monkeypatch.setattr(attention, "_xformers_attention", broken)
    monkeypatch.setattr(attention, "_RUNS", {})
    torch.manual_seed(0)
    with torch.device(CUDA):
        model = build_vit(get_preset("vit-test16").config).eval()
    x = torch.randn(2, 3, 224, 224, device=CUDA)
    with torch.inference_mode():
        monkeypatch.setattr(Attention, "use_xformers", False)
        sdpa = model(x)
        monkeypatch.setattr(Attention, "use_xformers", True)
        with caplog.at_level("WARNING", logger="core.models.attention"):
            fallback = model(x)
            again = model(x)
    assert torch.equal(fallback, sdpa) and torch.equal(again, sdpa)
    warnings = [r for r in caplog.records if "cannot compute attention" in r.getMessage()]
    assert len(warnings) == 1 and "No operator found" in warnings[0].getMessage()
