"""Shared fixtures for the cell-stage tests: synthetic smears with ground truth and a small image-dependent ViT."""

from __future__ import annotations

from pathlib import Path

import pytest

from slide_fixtures import synthetic
from tests_support import one_torch_thread, random_backbone


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The test backbone is tiny: extra intra-op threads only fight the reader threads on a busy 2-core machine."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def cells_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cell_slides")


@pytest.fixture(scope="session")
def smear(cells_root):
    """3072 x 3072 px at 0.25 µm/px, crowded, every class present (189 ground-truth cells, 22 LSIL/HSIL)."""
    return synthetic(cells_root, "smear.tiff", width=3072, height=3072, seed=3, abnormal_fraction=0.3,
                     density=2.0, cellularity=0.5)


@pytest.fixture(scope="session")
def smear2(cells_root):
    """A second smear with another stain, focus and layout (180 cells, 38 LSIL/HSIL)."""
    return synthetic(cells_root, "smear2.tiff", width=3072, height=3072, seed=5, abnormal_fraction=0.3,
                     density=2.0, cellularity=0.5)


@pytest.fixture(scope="session")
def cell_model(tmp_path_factory):
    """Preset vit-test16 (64-d, 2 blocks) with random weights and unit layer scales: features that depend on the
    image (DINOv2's 1e-5 initial layer scale would make every crop's CLS token nearly the same)."""
    from core.pipeline.analysis_model import model_from_checkpoint

    path = random_backbone(tmp_path_factory.mktemp("cell_backbone") / "vit_test16.pth")
    return model_from_checkpoint(path, device="cpu")


@pytest.fixture(scope="session")
def smear_cells(smear, tmp_path_factory):
    """The localisation-only cell stage of ``smear`` with small tiles (many tile borders)."""
    from core.cells import CellAnalysis, CellOptions

    out = tmp_path_factory.mktemp("smear_cells")
    return CellAnalysis(smear.path, out, None, options=CellOptions(core_px=384)).run()


@pytest.fixture(scope="session")
def embedded(smear, smear2, cell_model, tmp_path_factory):
    """The cell stage with embeddings (no classifier, no exports) of both smears: {slide stem: CellResult}."""
    from core.cells import CellAnalysis, CellOptions

    out = {}
    for truth in (smear, smear2):
        folder = tmp_path_factory.mktemp("embedded") / truth.path.stem
        out[truth.path.stem] = CellAnalysis(truth.path, folder, cell_model,
                                            options=CellOptions(core_px=512, index=False, exports=False)).run()
    return out
