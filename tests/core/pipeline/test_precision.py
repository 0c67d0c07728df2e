"""Backbone precision of an analysis: fp32 on a CPU unless asked, bf16 autocast on request, recorded in the
model's identity only when it is not fp32 (so results made before the setting existed still resume)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import CervixFMError
from core.pipeline.analysis_model import model_from_checkpoint, resolve_precision
from tests_support import random_backbone


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_backbone(tmp_path_factory.mktemp("precision") / "vit_test16.pth")


def test_auto_is_fp32_on_a_cpu_and_bf16_on_cuda():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(CervixFMError, match="CUDA"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(CervixFMError, match="Unknown precision"):
        resolve_precision("int8", torch.device("cpu"))


def test_bf16_autocast_gives_nearly_the_fp32_features_and_says_so_in_the_identity(checkpoint):
    fp32 = model_from_checkpoint(checkpoint, preset="vit-test16", device="cpu")
    bf16 = model_from_checkpoint(checkpoint, preset="vit-test16", device="cpu", precision="bf16")
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(4)]
    a, b = fp32.encode(tiles)["features"], bf16.encode(tiles)["features"]
    assert a.dtype == b.dtype == np.float32 and not np.array_equal(a, b)  # bf16 really ran
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99
    assert fp32.precision == "fp32" and "precision" not in fp32.identity()
    assert bf16.identity()["precision"] == "bf16"


def test_reader_threads_default_to_two_on_a_cpu_and_more_on_a_gpu(monkeypatch):
    from core.pipeline.analyze import default_readers

    assert default_readers(torch.device("cpu")) == 2
    for cores, expected in ((2, 2), (6, 4), (16, 8), (64, 8)):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert default_readers(torch.device("cuda")) == expected
