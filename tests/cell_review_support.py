"""A tiny analysed slide for the cell-gallery tests: a synthetic smear, a random ViT bundle with a cell classifier,
and the real tile + cell stages run on it (a few seconds, once per test session)."""

from __future__ import annotations

from pathlib import Path

from tests_support import random_backbone

CLASSES = ["Superficial squamous", "Intermediate squamous", "Parabasal", "LSIL", "HSIL", "Inflammatory"]
_CACHE: dict = {}


def tiny_bundle(folder: Path, slide: Path) -> Path:
    """Preset vit-test16 (64-d, 2 blocks) with random weights and unit layer scales (features that depend on the
    image), plus a 6-class cell-classifier head that spreads crops of ``slide`` over its classes.

    The random backbone's features share one large common component, so a plain random head calls every cell the
    same class; this head looks only at the directions in which crops of the slide differ (their principal
    components), scaled to logits of a few units, so the galleries have real rankings to show.
    """
    import numpy as np
    import torch

    from core.pipeline.analysis_model import model_from_checkpoint
    from core.slides import open_slide

    from core.models.bundle import BundleSpec, HeadSpec, write_bundle_manifest
    from core.models.heads import LinearHead, save_head

    folder.mkdir(parents=True, exist_ok=True)
    random_backbone(folder / "vit_test16.pth")
    backbone = model_from_checkpoint(folder / "vit_test16.pth", device="cpu")
    with open_slide(slide) as s:
        w, h = s.dimensions
        crops = [s.read_scaled(x, y, 448, 448, 224, 224) for x in np.linspace(0, w - 448, 8)
                 for y in np.linspace(0, h - 448, 6)]
    feats = backbone.encode(crops)["features"].astype(np.float64)
    mean = feats.mean(axis=0)
    _, _, vt = np.linalg.svd(feats - mean, full_matrices=False)
    rng = np.random.default_rng(2)
    weights = rng.standard_normal((len(CLASSES), 8)) @ vt[:8]
    weights *= 2.5 / ((feats - mean) @ weights.T).std()
    head = LinearHead(64, len(CLASSES))
    with torch.no_grad():
        head.classifier.weight.copy_(torch.as_tensor(weights, dtype=torch.float32))
        head.classifier.bias.copy_(torch.as_tensor(-weights @ mean, dtype=torch.float32))
    file = save_head(folder / "cells.safetensors", "linear", head, head.config(), CLASSES,
                     [[200, 100, 100]] * len(CLASSES), {"normal_classes": [c for c in CLASSES if "SIL" not in c]})
    spec = BundleSpec(folder, "tiny", folder / "vit_test16.pth", None, None, None, 224, 0.5,
                      (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (HeadSpec("cells", "cell-classifier", file),))
    write_bundle_manifest(spec)
    return folder


def analysed_smear(root: Path):
    """(slide path, bundle folder, SlideResult with a complete cell stage) of a 2048 x 1536 px smear."""
    if "smear" not in _CACHE:
        import torch

        from core.cells import CellOptions
        from core.pipeline.analysis_model import model_from_bundle
        from core.pipeline.analyze import SlideAnalysis
        from slide_fixtures import synthetic

        slide = synthetic(root, "review_smear.tiff", width=2048, height=1536, seed=3, abnormal_fraction=0.3,
                          density=2.0, cellularity=0.5).path
        bundle = tiny_bundle(root / "bundle", slide)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            model = model_from_bundle(bundle, device="cpu")
            result = SlideAnalysis(slide, model, root / "results", batch_size=16,
                                   cells=CellOptions(core_px=512)).run()
        finally:
            torch.set_num_threads(threads)
        _CACHE["smear"] = (slide, bundle, result)
    return _CACHE["smear"]


def settle_worker_threads(qtbot):
    """Let thumbnail reads and searches in flight finish, so none is inside a decoder when the process exits."""
    from cervixfm_app.viewer.thumbnails import thumbnail_queue
    from cervixfm_app.viewer.similar_cells import search_queue

    qtbot.waitUntil(lambda: thumbnail_queue().idle() and search_queue().idle(), timeout=20000)
