"""Multi-head self-attention with DINOv2's parameter names (``attn.qkv``, ``attn.proj``).

The kernel is torch's fused ``scaled_dot_product_attention`` everywhere; on CUDA, xformers' memory-efficient
attention is used when installed (it has no CPU kernels). Both compute the same softmax attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

try:  # optional GPU path
    from xformers.ops import memory_efficient_attention as _xformers_attention
except Exception:  # ImportError, or a broken CUDA build of xformers
    _xformers_attention = None


def xformers_available() -> bool:
    return _xformers_attention is not None


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
        if self.use_xformers and _xformers_attention is not None and x.is_cuda:
            q, k, v = qkv.unbind(2)  # (B, N, H, hd): xformers' layout
            out = _xformers_attention(q, k, v).reshape(b, n, c)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, hd)
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)
