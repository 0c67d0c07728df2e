"""Shared fixtures: where the read-only shared data lives, tiny checkpoints written on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CERVIXFM_SHARED", REPO.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", autouse=True)
def private_cervixfm_home(tmp_path_factory):
    """Tests never read or write the user's data and cache folders: an installed demo bundle, saved analyses or
    annotation sidecars there would change what the viewer does under test. Tests that need their own home still
    set ``CERVIXFM_HOME`` themselves (monkeypatch wins over this)."""
    previous = os.environ.get("CERVIXFM_HOME")
    os.environ["CERVIXFM_HOME"] = str(tmp_path_factory.mktemp("cervixfm_home"))
    yield
    if previous is None:
        os.environ.pop("CERVIXFM_HOME", None)
    else:
        os.environ["CERVIXFM_HOME"] = previous


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The parity vectors; their absence fails CI (the backbone must be checked there) and skips elsewhere."""
    path = SHARED / "golden"
    if not path.is_dir():
        if IN_CI:
            pytest.fail(f"parity vectors missing: {path}")
        pytest.skip(f"parity vectors not found at {path}")
    return path


@pytest.fixture(scope="session")
def cell_crops_dir() -> Path:
    path = SHARED / "data" / "cdetector_portion" / "train"
    if not path.is_dir():
        pytest.skip(f"real cell crops not found at {path}")
    return path
