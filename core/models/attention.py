"""Multi-head self-attention with DINOv2's parameter names (``attn.qkv``, ``attn.proj``).

The kernel is torch's fused ``scaled_dot_product_attention`` everywhere; on CUDA, xformers' memory-efficient
attention is used when it is installed and can run (it has no CPU kernels). Both compute the same softmax attention.

An installed xformers does not always run: a wheel built for another torch imports, but its CUDA extension does not
load, and every call then raises (seen with xformers 0.0.35, built for torch 2.10, on torch 2.11). Some kernels also
lack some dtypes or head sizes. So the first call for each (device, dtype, head size) tries xformers on a tiny input;
where that fails, attention uses SDPA, once with a warning that says why, instead of failing the analysis.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

try:  # optional GPU path
    from xformers.ops import memory_efficient_attention as _xformers_attention
except Exception:  # ImportError, or a broken CUDA build of xformers
    _xformers_attention = None


_RUNS: dict[tuple, bool] = {}


def xformers_available() -> bool:
    """xformers imports (whether it can run on a given GPU is ``xformers_runs``)."""
    return _xformers_attention is not None


def xformers_runs(device: torch.device | str, dtype: torch.dtype, head_dim: int) -> bool:
    """Can xformers compute attention for this device, dtype and head size? Tried once on a tiny input, then
    remembered."""
    if _xformers_attention is None:
        return False
    device = torch.device(device)
    key = (device, dtype, head_dim)
    if key not in _RUNS:
        try:
            q = torch.zeros(1, 4, 1, head_dim, device=device, dtype=dtype)
            _xformers_attention(q, q, q)
            _RUNS[key] = True
        except Exception as exc:  # NotImplementedError (no kernel), RuntimeError (extension not loaded), ...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("xformers is installed but cannot compute attention on %s for %s with head size %d (%s); "
                        "using torch's scaled_dot_product_attention instead.", device, dtype, head_dim, reason)
            _RUNS[key] = False
    return _RUNS[key]


class Attention(nn.Module):
    use_xformers: bool = True  # class-wide switch, e.g. to compare kernels

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        if self.use_xformers and x.is_cuda and xformers_runs(x.device, qkv.dtype, c // self.num_heads):
            q, k, v = qkv.unbind(2)  # (B, N, H, hd): xformers' layout
            out = _xformers_attention(q, k, v).reshape(b, n, c)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, hd)
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)
