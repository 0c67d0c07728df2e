"""A small folder of textured images for the pretraining tests (the tiny configuration is in pretrain_support)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def texture_images(tmp_path_factory) -> Path:
    """24 images of smooth random colour blobs (72 px): varied enough that crops differ, tiny to decode."""
    folder = tmp_path_factory.mktemp("textures")
    rng = np.random.default_rng(0)
    for i in range(24):
        base = rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)
        Image.fromarray(base).resize((72, 72), Image.BICUBIC).save(folder / f"{i:03d}.png")
    return folder
