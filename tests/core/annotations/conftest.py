from __future__ import annotations

import pytest
from slide_fixtures import synthetic


@pytest.fixture(scope="session")
def ann_root(tmp_path_factory):
    return tmp_path_factory.mktemp("annotations")


@pytest.fixture(scope="session")
def gt_slide(ann_root):
    """A 2048 x 2048 synthetic slide at 0.25 µm/px with its ground-truth cells (every class present)."""
    return synthetic(ann_root, "gt.tiff", width=2048, height=2048, seed=4, abnormal_fraction=0.5,
                     cellularity=0.8, density=2.0)
