"""Image to model input, as the published downstream code does it: RGB, ToTensor (/255), ImageNet mean/std.

Crops of the model's size go in unchanged. Other sizes are resized so the shorter side equals the model size
(bicubic, antialiased) and centre-cropped: the backbone then sees the scale and field of view it was trained on,
position embeddings need no interpolation, and images of mixed sizes batch together.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .presets import IMAGENET_MEAN, IMAGENET_STD


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def fit(self, image: np.ndarray) -> np.ndarray:
        """An ``size`` x ``size`` RGB uint8 view of ``image`` (unchanged when it already is)."""
        h, w = image.shape[:2]
        if h == self.size and w == self.size:
            return image
        scale = self.size / min(h, w)
        new_w, new_h = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC, reducing_gap=None))
        top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
        return resized[top:top + self.size, left:left + self.size]

    def to_tensor(self, images: np.ndarray | Sequence[np.ndarray], device: torch.device | str | None = None
                  ) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, normalised; on ``device`` when given, where the bytes go
        over as uint8 (a quarter of float32's traffic) and are normalised there."""
        batch = torch.from_numpy(np.ascontiguousarray(np.stack(images) if not isinstance(images, np.ndarray) else images))
        if device is not None:
            batch = batch.to(device, non_blocking=True)
        if batch.ndim == 3:
            batch = batch[None]
        x = batch.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)
