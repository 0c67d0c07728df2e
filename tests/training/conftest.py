"""Fixtures for the evaluation recipes: a tiny random backbone on disk and small labelled image sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests_support import one_torch_thread, random_backbone

@pytest.fixture(autouse=True)
def _one_thread():
    """The models here are tiny: intra-op threads only add overhead, badly so on a busy 2-core machine."""
    with one_torch_thread():
        yield


COLOURS = [(200, 60, 60), (60, 180, 60), (60, 60, 200), (200, 200, 60)]


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A two-block 64-d ViT/16 (preset vit-test16) with random weights, as a bare state dict."""
    return _random_backbone(tmp_path_factory.mktemp("backbone") / "tiny.pth", seed=0)


@pytest.fixture(scope="session")
def other_backbone(tmp_path_factory) -> Path:
    return _random_backbone(tmp_path_factory.mktemp("backbone2") / "other.pth", seed=1)


def _random_backbone(path: Path, seed: int) -> Path:
    return random_backbone(path, seed=seed)  # unit layer scales: features that depend on the image


def make_image(label: int, rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """A flat colour per class plus noise: easy for any backbone, so a probe must learn it."""
    base = np.array(COLOURS[label % len(COLOURS)], np.float32)
    img = base + rng.normal(0, 25, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_split(folder: Path, counts: list[int], rng: np.random.Generator, prefix: str = "") -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    k = 0
    for label, n in enumerate(counts):
        for _ in range(n):
            name = f"{prefix}{k:04d}.png"
            Image.fromarray(make_image(label, rng, 32)).save(folder / name)
            rows.append([name, str(label)])
            k += 1
    order = rng.permutation(len(rows))
    return np.asarray(rows, dtype=str)[order]


@pytest.fixture()
def train_test_dataset(tmp_path) -> Path:
    """train/ test/ train.npy test.npy with 3 classes of small (32 px, resized by preprocessing) images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "cells"
    root.mkdir()
    np.save(root / "train.npy", write_split(root / "train", [12, 8, 6], rng, "tr"))
    np.save(root / "test.npy", write_split(root / "test", [5, 4, 3], rng, "te"))
    return root


@pytest.fixture()
def single_folder_dataset(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    root = tmp_path / "single"
    root.mkdir()
    np.save(root / "data_label.npy", write_split(root / "data", [10, 10, 5], rng))
    return root
