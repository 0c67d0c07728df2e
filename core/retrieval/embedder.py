"""Image crops to query embeddings, with the identity an index checks them against.

An index only answers queries embedded by the backbone that built it; bundling the model with its identity makes
that check impossible to forget.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import numpy as np

from .identity import identity_of_backbone, identity_of_model


@dataclasses.dataclass
class ImageEmbedder:
    model: Any  # core.models.VisionTransformer
    preprocessing: Any  # core.models.preprocessing.Preprocessing
    feature: str
    device: Any
    identity: dict[str, Any]
    batch_size: int = 32

    @classmethod
    def from_backbone(cls, loaded, device="cpu", batch_size: int = 32) -> "ImageEmbedder":
        """From a :class:`core.models.LoadedBackbone` (crops of its ``input_size``, the preset's mean/std)."""
        return cls(loaded.model.to(device).eval(), loaded.preprocessing(), loaded.feature, device,
                   identity_of_backbone(loaded), batch_size)

    @classmethod
    def from_analysis_model(cls, model, batch_size: int = 32) -> "ImageEmbedder":
        """From a :class:`core.pipeline.analysis_model.AnalysisModel` (a bundle's own preprocessing)."""
        return cls(model.backbone.model, model.preprocessing, model.backbone.feature, model.device,
                   identity_of_model(model), batch_size)

    @property
    def size(self) -> int:
        return self.preprocessing.size

    def embed(self, images: Sequence[np.ndarray], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """(N, D) float32 features of RGB uint8 crops (resized and centre-cropped to the model size if needed)."""
        from ..models.inference import embed_images

        return embed_images(self.model, images, self.preprocessing, batch_size=self.batch_size, device=self.device,
                            feature=self.feature, progress=progress)

    def embed_files(self, paths: Sequence[str | os.PathLike], workers: int = 2,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Features of image files, decoded on ``workers`` threads a few batches ahead of the model."""
        from ..images import read_rgb
        from ..models.inference import prefetched

        stream = prefetched(list(paths), read_rgb, ahead=4 * self.batch_size, workers=max(1, workers))
        return self.embed(stream, progress)
