from __future__ import annotations

import pytest
from slide_fixtures import synthetic


@pytest.fixture(scope="session")
def slides_root(tmp_path_factory):
    return tmp_path_factory.mktemp("slides")


@pytest.fixture(scope="session")
def synth(slides_root):
    """A 4096 x 4096 generic tiled TIFF at 0.25 µm/px with plenty of cells of every class."""
    return synthetic(slides_root, "synth.tiff", width=4096, height=4096, seed=7, abnormal_fraction=0.3,
                     cellularity=0.6, density=2.0)


@pytest.fixture(scope="session")
def sparse(slides_root):
    """A sparse slide: most of the glass is empty."""
    return synthetic(slides_root, "sparse.tiff", width=4096, height=4096, seed=21, cellularity=0.25)


@pytest.fixture(scope="session")
def synth_svs(slides_root):
    """An Aperio-style SVS with label, macro and thumbnail."""
    return synthetic(slides_root, "synth.svs", width=2048, height=2048, seed=8, abnormal_fraction=0.3,
                     cellularity=0.7)


@pytest.fixture(scope="session")
def plain_images(slides_root, synth_svs):
    """Level 0 of the SVS saved as PNG (no MPP), as a stripped TIFF with MPP tags, and as JPEG."""
    import tifffile
    from PIL import Image

    from core.slides import open_slide

    with open_slide(synth_svs.path) as slide:
        rgb = slide.read_region((0, 0), 0, slide.dimensions)
    png = slides_root / "plain.png"
    Image.fromarray(rgb).save(png)
    tif = slides_root / "plain_stripped.tif"
    tifffile.imwrite(tif, rgb, photometric="rgb", compression="zlib", resolution=(1e4 / 0.25, 1e4 / 0.25),
                     resolutionunit="CENTIMETER", rowsperstrip=64)
    jpg = slides_root / "plain.jpg"
    Image.fromarray(rgb).save(jpg, quality=92)
    return {"rgb": rgb, "png": png, "tif": tif, "jpg": jpg, "truth": synth_svs}
