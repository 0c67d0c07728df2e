"""Feature files: round trip, streaming writes, other tools' variants, errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from core.errors import InputError
from core.pipeline.feature_file import read_features, write_features


def test_streamed_chunks_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    chunks = [(rng.normal(size=(n, 8)).astype(np.float32), rng.integers(0, 10_000, (n, 2))) for n in (5, 0, 7)]
    path = tmp_path / "slide.h5"
    rows = write_features(path, chunks, {"encoder": "cervixfm-vitl16", "patch_size": 224, "mpp": 0.5})
    fs = read_features(path)
    assert rows == 12 and fs.features.shape == (12, 8) and fs.features.dtype == np.float32
    np.testing.assert_array_equal(fs.features, np.concatenate([c[0] for c in chunks]))
    np.testing.assert_array_equal(fs.coords, np.concatenate([c[1] for c in chunks]))
    assert fs.attrs["encoder"] == "cervixfm-vitl16" and fs.attrs["patch_size"] == 224
    with h5py.File(path) as h5:  # CLAM reads attributes from the coords dataset
        assert h5["coords"].attrs["patch_size"] == 224 and h5["features"].maxshape == (None, 8)
    assert [p.name for p in tmp_path.iterdir()] == ["slide.h5"]


def test_reads_clam_style_batched_layout(tmp_path):
    path = tmp_path / "clam.h5"
    with h5py.File(path, "w") as h5:
        h5["features"] = np.ones((1, 3, 4), np.float32)
        h5["coords"] = np.zeros((1, 3, 2), np.int32)
    fs = read_features(path)
    assert fs.features.shape == (3, 4) and fs.coords.shape == (3, 2)


def test_bad_feature_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_features(tmp_path / "none.h5")
    (tmp_path / "text.h5").write_text("nope")
    with pytest.raises(InputError, match="text.h5"):
        read_features(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["data"] = np.zeros(3)
    with pytest.raises(InputError, match="no 'features'"):
        read_features(tmp_path / "other.h5")


def test_failed_write_leaves_nothing(tmp_path):
    def chunks():
        yield np.zeros((2, 4), np.float32), np.zeros((2, 2))
        raise RuntimeError("backbone crashed")

    with pytest.raises(RuntimeError):
        write_features(tmp_path / "x.h5", chunks())
    assert list(tmp_path.iterdir()) == []
