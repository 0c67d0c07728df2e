"""Opening synthetic slides through OpenSlide and through the plain-image path: metadata and pixel content."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from slide_fixtures import background_points, luminance

from core.errors import SlideError
from core.slides import DEFAULT_MPP, open_slide


def _nuclei_are_dark(slide, truth, level=0):
    """Fraction of ground-truth nucleus centres whose 3x3 neighbourhood is clearly darker than the glass."""
    bg = luminance(np.asarray(truth.info.style["background"], float))
    ds = slide.level_downsamples[level]
    dark = []
    for x, y in truth.nucleus_centres():
        patch = slide.read_region((int(x) - int(ds), int(y) - int(ds)), level, (3, 3))
        dark.append(luminance(patch).mean() < 0.8 * bg)
    return float(np.mean(dark))


def _background_is_bright(slide, truth):
    bg = np.asarray(truth.info.style["background"], float)
    w, h = slide.dimensions
    ok = []
    for x, y in background_points(truth, w, h, n=200):
        px = slide.read_region((int(x), int(y)), 0, (2, 2)).reshape(-1, 3).mean(axis=0)
        ok.append(np.abs(px - bg).max() < 10)
    return float(np.mean(ok))


def test_openslide_metadata(synth):
    with open_slide(synth.path) as slide:
        assert slide.backend == "openslide" and slide.vendor == "generic-tiff"
        assert slide.dimensions == (4096, 4096)
        assert slide.level_dimensions == tuple((w, h) for _, w, h in synth.info.levels)
        assert slide.level_downsamples == (1.0, 2.0, 4.0, 8.0)
        assert slide.mpp == pytest.approx((0.25, 0.25)) and slide.mpp_source == "file"
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert slide.bounds == (0, 0, 4096, 4096)
        assert slide.objective_power is None and slide.magnification == pytest.approx(40.0)
        meta = slide.metadata()
        assert meta["levels"][2]["mpp_x"] == pytest.approx(1.0) and meta["associated_images"] == {}


def test_svs_metadata_and_associated_images(synth_svs):
    with open_slide(synth_svs.path) as slide:
        assert slide.vendor == "aperio"
        assert slide.objective_power == 40.0 and slide.mpp == pytest.approx((0.25, 0.25))
        assert set(slide.associated_image_names) == {"label", "macro", "thumbnail"}
        for name in slide.associated_image_names:
            img = slide.associated_image(name)
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            assert (img.shape[1], img.shape[0]) == slide.associated_image_size(name)
        label = slide.associated_image("label")
        assert (label < 50).any() and (label > 200).any()  # printed code on white paper
        with pytest.raises(SlideError, match="no associated image 'overview'"):
            slide.associated_image("overview")


def test_pixels_match_ground_truth_through_openslide(synth):
    with open_slide(synth.path) as slide:
        assert len(synth.features) > 200
        assert _nuclei_are_dark(slide, synth) >= 0.98
        assert _background_is_bright(slide, synth) >= 0.99


def test_pixels_match_ground_truth_on_lower_level(synth):
    with open_slide(synth.path) as slide:
        big = [f for f in synth.features if f["properties"]["measurements"]["Nucleus: Area µm^2"] > 30]
        sub = type(synth)(synth.path, synth.geojson, synth.info, big)
        assert _nuclei_are_dark(slide, sub, level=1) >= 0.95


def test_levels_are_consistent(synth):
    with open_slide(synth.path) as slide:
        level0 = slide.read_region((0, 0), 0, slide.dimensions).astype(np.float64)
        for level in range(1, slide.level_count):
            ds = int(slide.level_downsamples[level])
            w, h = slide.level_dimensions[level]
            got = slide.read_region((0, 0), level, (w, h)).astype(np.float64)
            want = level0.reshape(h, ds, w, ds, 3).mean(axis=(1, 3))
            diff = np.abs(got - want)
            assert diff.mean() < 2.5, (level, diff.mean())
            assert np.abs(got.mean(axis=(0, 1)) - want.mean(axis=(0, 1))).max() < 1.5


def test_read_region_contract(synth):
    with open_slide(synth.path) as slide:
        region = slide.read_region((100, 200), 0, (64, 32))
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8 and region.flags["C_CONTIGUOUS"]
        outside = slide.read_region((5000, 5000), 0, (16, 16))
        assert (outside == 255).all()
        edge = slide.read_region((4096 - 8, 0), 0, (16, 4))
        assert (edge[:, 8:] == 255).all()
        assert slide.read_region((0, 0), 0, (0, 5)).shape == (5, 0, 3)
        with pytest.raises(ValueError):
            slide.read_region((0, 0), 9, (4, 4))


def test_level_choice_and_scaled_reads(synth):
    with open_slide(synth.path) as slide:
        assert [slide.level_for_downsample(d) for d in (0.5, 1, 1.9, 2, 3.9, 3.99, 100)] == [0, 0, 0, 1, 1, 2, 3]
        tile = slide.read_scaled(1000, 1000, 448, 448, 224, 224)
        assert tile.shape == (224, 224, 3)
        direct = slide.read_region((1000, 1000), 1, (224, 224))
        assert np.array_equal(tile, direct)  # exactly level 1: no resampling
        odd = slide.read_scaled(1000, 1000, 600, 300, 100, 50)
        assert odd.shape == (50, 100, 3)


def test_thumbnail(synth):
    with open_slide(synth.path) as slide:
        thumb = slide.thumbnail(256)
        assert thumb.shape == (256, 256, 3)
        assert np.abs(thumb.astype(float) - slide.overview(16).astype(float)).mean() < 1.0


def test_concurrent_reads_agree(synth):
    rng = np.random.default_rng(0)
    jobs = [(int(x), int(y), int(lv)) for x, y, lv in zip(rng.integers(0, 3800, 64), rng.integers(0, 3800, 64),
                                                          rng.integers(0, 3, 64))]
    with open_slide(synth.path) as slide:
        want = [slide.read_region((x, y), lv, (256, 256)) for x, y, lv in jobs]
        got: dict[int, np.ndarray] = {}

        def worker(part):
            for i in part:
                x, y, lv = jobs[i]
                got[i] = slide.read_region((x, y), lv, (256, 256))

        threads = [threading.Thread(target=worker, args=(range(k, len(jobs), 4),)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(np.array_equal(got[i], want[i]) for i in range(len(jobs)))


def test_mpp_override_and_validation(synth):
    with open_slide(synth.path, mpp=0.5) as slide:
        assert slide.mpp == (0.5, 0.5) and slide.mpp_source == "user"
    with open_slide(synth.path, mpp=(0.3, 0.31)) as slide:
        assert slide.mpp == (0.3, 0.31)
    with pytest.raises(SlideError, match="positive"):
        open_slide(synth.path, mpp=-1)


def test_plain_png_is_a_one_level_slide(plain_images):
    truth = plain_images["truth"]
    with open_slide(plain_images["png"]) as slide:
        assert slide.backend == "image" and slide.vendor == "image/png"
        assert slide.level_count == 1 and slide.level_downsamples == (1.0,)
        assert slide.dimensions == (2048, 2048)
        assert slide.mpp == (DEFAULT_MPP, DEFAULT_MPP) and slide.mpp_source == "fallback"
        assert "no microns-per-pixel" in slide.mpp_note
        assert np.array_equal(slide.read_region((0, 0), 0, (2048, 2048)), plain_images["rgb"])
        assert _nuclei_are_dark(slide, truth) >= 0.98
        assert _background_is_bright(slide, truth) >= 0.99
        padded = slide.read_region((2040, -4), 0, (16, 8))
        assert (padded[:4] == 255).all() and (padded[:, 8:] == 255).all()
        assert np.array_equal(padded[4:, :8], plain_images["rgb"][0:4, 2040:2048])
        assert slide.thumbnail(512).shape == (512, 512, 3)
        assert slide.read_scaled(0, 0, 448, 448, 224, 224).shape == (224, 224, 3)


def test_plain_stripped_tiff_keeps_its_mpp(plain_images):
    with open_slide(plain_images["tif"]) as slide:
        assert slide.backend == "image"  # OpenSlide only reads tiled TIFFs
        assert slide.mpp == pytest.approx((0.25, 0.25), rel=1e-3) and slide.mpp_source == "file"
        assert np.array_equal(slide.read_region((0, 0), 0, (2048, 2048)), plain_images["rgb"])


def test_plain_jpeg(plain_images):
    with open_slide(plain_images["jpg"]) as slide:
        assert slide.vendor == "image/jpeg" and slide.dimensions == (2048, 2048)
        diff = np.abs(slide.read_region((0, 0), 0, (2048, 2048)).astype(int) - plain_images["rgb"].astype(int))
        assert diff.mean() < 2.0
        assert _nuclei_are_dark(slide, plain_images["truth"]) >= 0.98


def test_plain_bmp(plain_images, slides_root):
    from PIL import Image

    path = slides_root / "plain.bmp"
    Image.fromarray(plain_images["rgb"][:300, :400]).save(path)
    with open_slide(path) as slide:
        assert slide.vendor == "image/bmp" and slide.dimensions == (400, 300)
        assert np.array_equal(slide.read_region((0, 0), 0, (400, 300)), plain_images["rgb"][:300, :400])


def test_rgba_image_is_composited_on_white(slides_root):
    from PIL import Image

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    path = slides_root / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    with open_slide(path) as slide:
        px = slide.read_region((0, 0), 0, (8, 8))
    assert (px[:4] == (200, 0, 0)).all() and (px[4:] == 255).all()
