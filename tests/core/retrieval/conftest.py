"""Fixtures for the retrieval tests: a tiny backbone and an analysed synthetic slide."""

from __future__ import annotations

import pytest

from tests_support import one_torch_thread


@pytest.fixture(scope="session")
def tiny_checkpoint(golden_dir):
    return golden_dir / "cervixfm_tiny.pth"


@pytest.fixture(scope="session")
def analysed_slide(tmp_path_factory, tiny_checkpoint):
    """A synthetic 2048 x 2048 slide analysed with the tiny backbone: (slide path, SlideResult)."""
    from core.pipeline.analysis_model import model_from_checkpoint
    from core.pipeline.analyze import SlideAnalysis
    from slide_fixtures import synthetic

    root = tmp_path_factory.mktemp("retrieval_slides")
    slide = synthetic(root, "smear.tiff", width=2048, height=2048, seed=1).path
    model = model_from_checkpoint(tiny_checkpoint, device="cpu")
    result = SlideAnalysis(slide, model, root / "results", batch_size=8).run()
    return slide, result


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The backbone here is tiny: extra intra-op threads only contend on a busy 2-core machine."""
    with one_torch_thread():
        yield
