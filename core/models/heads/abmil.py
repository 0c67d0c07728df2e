"""Gated-attention multiple-instance learning over the tile features of one slide (Ilse et al., CLAM's layout).

A slide is a bag of tile features ``h`` (N, D). Each tile gets an attention score from a gated branch,
``w · (tanh(V h) * sigmoid(U h))``; the softmax of those scores over the tiles weights the tile embeddings into one
slide embedding, which a linear layer classifies. The attention weights are what the viewer paints as the slide
heat map, so they are returned with the logits.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
from torch import nn


@dataclasses.dataclass
class ABMILOutput:
    logits: torch.Tensor  # (C,)
    attention: torch.Tensor  # (N,) softmax weights over the tiles, summing to 1
    attention_logits: torch.Tensor  # (N,) raw scores before the softmax (for percentile heat maps)


class GatedAttention(nn.Module):
    def __init__(self, dim: int, attn_dim: int, dropout: float):
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(attn_dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.attention_c(self.attention_a(h) * self.attention_b(h)).squeeze(-1)


class ABMIL(nn.Module):
    """``Linear(D, hidden) + ReLU + Dropout`` per tile, gated attention ``hidden -> attn_dim -> 1``, then
    ``Linear(hidden, C)`` on the attention-pooled embedding. Defaults are CLAM's (512, 256, dropout 0.25)."""

    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int = 512, attn_dim: int = 256,
                 dropout: float = 0.25):
        super().__init__()
        if in_dim < 1 or num_classes < 2:
            raise ValueError(f"ABMIL needs in_dim >= 1 and at least 2 classes, got {in_dim}, {num_classes}")
        self.in_dim, self.num_classes = int(in_dim), int(num_classes)
        self.hidden_dim, self.attn_dim, self.dropout = int(hidden_dim), int(attn_dim), float(dropout)
        self.fc = nn.Sequential(nn.Linear(self.in_dim, self.hidden_dim), nn.ReLU(), nn.Dropout(self.dropout))
        self.attention = GatedAttention(self.hidden_dim, self.attn_dim, self.dropout)
        self.classifier = nn.Linear(self.hidden_dim, self.num_classes)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, features: torch.Tensor) -> ABMILOutput:
        """``features``: (N, D) tiles of one slide, or (1, N, D) as CLAM passes them. N must be at least 1."""
        if features.ndim == 3 and features.shape[0] == 1:
            features = features[0]
        if features.ndim != 2 or features.shape[1] != self.in_dim:
            raise ValueError(f"expected (N, {self.in_dim}) tile features, got {tuple(features.shape)}")
        if features.shape[0] == 0:
            raise ValueError("a slide without tiles has no ABMIL score")
        h = self.fc(features)
        scores = self.attention(h)
        weights = torch.softmax(scores, dim=0)
        slide = weights @ h
        return ABMILOutput(self.classifier(slide), weights, scores)

    def config(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim, "num_classes": self.num_classes, "hidden_dim": self.hidden_dim,
                "attn_dim": self.attn_dim, "dropout": self.dropout}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ABMIL":
        return cls(int(config["in_dim"]), int(config["num_classes"]), int(config.get("hidden_dim", 512)),
                   int(config.get("attn_dim", 256)), float(config.get("dropout", 0.25)))

    @torch.inference_mode()
    def predict(self, features) -> tuple[Any, Any, Any]:
        """(class probabilities (C,), attention (N,), attention logits (N,)) as numpy, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            param = next(self.parameters())
            x = torch.as_tensor(features, dtype=param.dtype, device=param.device)
            out = self(x)
            probs = torch.softmax(out.logits, dim=-1)
            return probs.cpu().numpy(), out.attention.cpu().numpy(), out.attention_logits.cpu().numpy()
        finally:
            self.train(was_training)
