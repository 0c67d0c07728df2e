"""DINO/iBOT projection head: an MLP to a bottleneck, L2 normalisation, then a weight-normalised prototype layer.

The prototype layer is ``x @ (V / ||V||_rows)^T``: each of the K prototypes is a unit vector, so a score is a cosine
similarity and the softmax temperature alone sets how peaked the assignment is. The weight-norm gain (``weight_g``)
is fixed at 1 as in DINOv2; it is kept as a buffer so checkpoints carry DINOv2's ``last_layer.weight_g`` and
``last_layer.weight_v`` names.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PrototypeLayer(nn.Module):
    """Weight-normalised linear layer without bias whose gain is fixed at 1."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        self.register_buffer("weight_g", torch.ones(out_dim, 1))
        # nn.Linear's default initialisation, as DINOv2 builds this layer after initialising the MLP: the rows'
        # norm sets how fast Adam turns the prototypes (the update of v / ||v|| scales with 1 / ||v||).
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))

    def weight(self) -> torch.Tensor:
        v = self.weight_v
        return v * (self.weight_g.to(v.dtype) / v.norm(dim=1, keepdim=True))  # one pass over the (K, d) matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight().to(x.dtype))


class DINOHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = 65536, nlayers: int = 3, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, mlp_bias: bool = True):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim, bias=mlp_bias)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=mlp_bias), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim, bias=mlp_bias), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim, bias=mlp_bias))
            self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.last_layer = PrototypeLayer(bottleneck_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        eps = 1e-6 if x.dtype == torch.float16 else 1e-12
        x = F.normalize(x, dim=-1, p=2, eps=eps)
        return self.last_layer(x)


def build_head(cfg_head, in_dim: int) -> DINOHead:
    return DINOHead(in_dim, out_dim=int(cfg_head.head_n_prototypes), nlayers=int(cfg_head.head_nlayers),
                    hidden_dim=int(cfg_head.head_hidden_dim), bottleneck_dim=int(cfg_head.head_bottleneck_dim))
