"""Feed-forward layers of DINOv2-style blocks.

``Mlp`` (keys ``fc1``/``fc2``, GELU) and ``SwiGLUFFNFused`` (keys ``w12``/``w3``). The fused SwiGLU rounds its hidden
size as DINOv2 does, ``(int(hidden * 2 / 3) + 7) // 8 * 8``, unless an exact hidden size is given (checkpoints of
other SwiGLU models carry sizes the rounding rule would not produce).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden_features(dim: int, mlp_ratio: float) -> int:
    hidden = int(dim * mlp_ratio)
    return (int(hidden * 2 / 3) + 7) // 8 * 8


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_features: int, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFNFused(nn.Module):
    def __init__(self, dim: int, hidden_features: int, bias: bool = True):
        super().__init__()
        self.hidden_features = hidden_features
        self.w12 = nn.Linear(dim, 2 * hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)
