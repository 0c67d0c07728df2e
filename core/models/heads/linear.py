"""Linear classifier on frozen backbone features, as the published linear probe defines it."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn


class LinearHead(nn.Module):
    """``Linear(in_dim, num_classes)`` initialised to zero.

    Zero initialisation is the published protocol: every probe starts from uniform predictions, so runs differ only
    by the data order and the features, not by a random head.
    """

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        if in_dim < 1 or num_classes < 2:
            raise ValueError(f"a linear head needs in_dim >= 1 and at least 2 classes, got {in_dim}, {num_classes}")
        self.in_dim, self.num_classes = int(in_dim), int(num_classes)
        self.classifier = nn.Linear(self.in_dim, self.num_classes)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)

    def config(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim, "num_classes": self.num_classes}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "LinearHead":
        return cls(int(config["in_dim"]), int(config["num_classes"]))
