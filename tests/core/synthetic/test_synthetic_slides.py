"""Synthetic Pap smears: determinism, streaming, pyramid and MPP metadata, QuPath GeoJSON, cell morphology."""

from __future__ import annotations

import hashlib
import json
import uuid

import numpy as np
import pytest
from shapely.geometry import shape
from slide_fixtures import luminance, synthetic

from core.errors import CervixFMError
from core.slides import open_slide
from core.synthetic import CLASS_NAMES, build, generate_slide
from core.synthetic.classes import HSIL, INTERMEDIATE, LSIL, SUPERFICIAL
from core.synthetic.shapes import Outline, radius_table
from core.synthetic.writer import PyramidWriter, pyramid_levels


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="module")
def rich(root):
    """Many abnormal cells so every class is present."""
    return synthetic(root, "rich.tiff", width=4096, height=4096, seed=5, abnormal_fraction=0.5, cellularity=0.7,
                     density=2.0)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_deterministic_for_a_seed_and_any_thread_count(root):
    a = generate_slide(root / "a.tiff", 1536, 1024, seed=11, workers=1)
    b = generate_slide(root / "b.tiff", 1536, 1024, seed=11, workers=3)
    c = generate_slide(root / "c.tiff", 1536, 1024, seed=12, workers=2)
    assert _sha(a.path) == _sha(b.path) and _sha(a.geojson) == _sha(b.geojson)
    assert _sha(a.path) != _sha(c.path)


def test_pyramid_and_metadata_through_openslide(root):
    info = generate_slide(root / "odd.tiff", 3000, 1700, seed=1, mpp=0.5, tile=256)
    assert info.levels == [(1, 3000, 1700), (2, 1500, 850), (4, 750, 425), (8, 375, 213), (16, 188, 107)]
    with open_slide(info.path) as slide:
        assert slide.level_dimensions == ((3000, 1700), (1500, 850), (750, 425), (375, 213), (188, 107))
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.5)
        assert slide.properties["openslide.level[0].tile-width"] == "256"
        assert slide.properties["tiff.ResolutionUnit"] == "centimeter"
        assert "seed=1" in slide.properties["tiff.ImageDescription"]
    assert pyramid_levels(512, 512, 512) == pyramid_levels(512, 512, 512)[:1]
    assert len(pyramid_levels(100_000, 100_000, 512)) == 9


def test_svs_flavour(root):
    info = generate_slide(root / "demo.svs", 1024, 1024, seed=2, mpp=0.5)
    with open_slide(info.path) as slide:
        assert slide.vendor == "aperio" and slide.objective_power == 20.0
        assert slide.mpp == pytest.approx((0.5, 0.5))
        assert set(slide.associated_image_names) == {"label", "macro", "thumbnail"}


def test_geojson_is_valid_qupath(rich):
    data = json.loads(rich.geojson.read_text(encoding="utf-8"))
    assert data["type"] == "FeatureCollection" and len(data["features"]) == rich.info.cells
    ids = set()
    for f in data["features"]:
        assert f["type"] == "Feature"
        ids.add(str(uuid.UUID(f["id"])))
        props = f["properties"]
        assert props["objectType"] == "cell"
        assert props["classification"]["name"] in CLASS_NAMES
        assert len(props["classification"]["color"]) == 3
        cell, nucleus = shape(f["geometry"]), shape(f["nucleusGeometry"])
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 49
        assert cell.geom_type == "Polygon" and cell.is_valid and nucleus.is_valid
        assert nucleus.within(cell.buffer(2.0))
        assert 0 <= cell.bounds[0] and cell.bounds[2] <= 4096
        m = props["measurements"]
        assert m["Cell: Area µm^2"] == pytest.approx(cell.area * 0.25**2, rel=1e-3)
    assert len(ids) == len(data["features"])


def test_every_class_present_with_its_features(rich):
    counts = rich.info.class_counts
    assert all(counts[name] > 0 for name in CLASS_NAMES), counts
    assert 0.2 < rich.info.abnormal_fraction < 0.8

    def median(name, key):
        return float(np.median([f["properties"]["measurements"][key] for f in rich.cells(name)]))

    nc = "Cell: Nucleus/Cell area ratio"
    nuc = "Nucleus: Area µm^2"
    cell = "Cell: Area µm^2"
    assert median("HSIL", nc) > 0.35 > median("Intermediate squamous", nc) > median("Superficial squamous", nc)
    assert median("LSIL", nuc) > 2.0 * median("Intermediate squamous", nuc)  # koilocyte nuclei are enlarged
    assert median("Superficial squamous", cell) > 1500 and median("Parabasal", cell) < 500
    assert median("HSIL", cell) < median("Parabasal", cell) * 1.2
    assert all(f["properties"]["measurements"]["Perinuclear halo"] == 1.0 for f in rich.cells("LSIL"))
    assert not any(f["properties"]["measurements"]["Perinuclear halo"] for f in rich.cells("HSIL"))


def test_abnormal_fraction_zero_means_no_abnormal_cells(root):
    _, layout, _ = build(4096, 4096, seed=9, abnormal_fraction=0.0, cellularity=0.8)
    counts = layout.class_counts()
    assert counts["LSIL"] == counts["HSIL"] == 0 and counts["Superficial squamous"] > 0


def _alone(layout, style, rec):
    """A renderer for one cell on empty glass, so neighbours cannot hide what is being measured."""
    from core.synthetic.layout import Layout
    from core.synthetic.render import Renderer

    solo = Layout(layout.width, layout.height, layout.mpp, rec[None].copy(), layout.population)
    return Renderer(solo, style, np.random.default_rng(0))


def test_koilocyte_halo_and_hsil_nuclei_as_drawn():
    style, layout, _ = build(4096, 4096, seed=5, abnormal_fraction=0.5, cellularity=0.7, density=2.0)
    cells = layout.cells
    bg = luminance(style.background)

    def polar(rec, half):
        x0, y0 = int(rec["c_x"]) - half, int(rec["c_y"]) - half
        img = _alone(layout, style, rec).region(1, x0, y0, 2 * half, 2 * half)
        yy, xx = np.mgrid[0:2 * half, 0:2 * half]
        return luminance(img), np.hypot(xx + x0 - rec["n_x"], yy + y0 - rec["n_y"])

    lsil = cells[cells["cls"] == LSIL][:10]
    assert len(lsil) == 10
    for rec in lsil:
        lum, dist = polar(rec, 140)
        nr, hr = rec["n_r"], rec["h_r"]
        nucleus = lum[dist < 0.5 * nr].mean()
        halo = lum[(dist > 1.3 * nr) & (dist < 1.3 * nr + 0.3 * (hr - 1.3 * nr))].mean()
        rim = lum[(dist > 1.05 * hr) & (dist < 1.25 * hr)].mean()  # condensed cytoplasm around the halo
        assert nucleus < 0.6 * bg and halo > bg - 15 and rim < halo - 15, (nucleus, halo, rim, bg)

    hsil = cells[cells["cls"] == HSIL][:20]
    for rec in hsil:
        lum, dist = polar(rec, 60)
        assert lum[dist < 0.4 * rec["n_r"]].mean() < 0.6 * bg
    hsil_r = np.median(hsil["n_r"] / hsil["c_r"])
    inter = cells[cells["cls"] == INTERMEDIATE]
    assert hsil_r > 0.55 > 0.3 > np.median(inter["n_r"] / inter["c_r"])
    # Superficial nuclei are small and pyknotic (dense); intermediate ones are larger and paler.
    sup = cells[cells["cls"] == SUPERFICIAL]
    assert np.median(sup["n_r"]) < np.median(inter["n_r"])
    assert np.median(np.asarray(sup["nuc_od"]).sum(1)) > np.median(np.asarray(inter["nuc_od"]).sum(1))


def test_tiles_are_seamless_and_order_free():
    _, layout, renderer = build(2048, 2048, seed=3, cellularity=0.9, density=2.0)
    for ds in (1, 4):
        whole = renderer.optical_density(ds, 0, 0, 512, 512)
        parts = [renderer.optical_density(ds, c, r, 256, 256) for r in (0, 256) for c in (0, 256)]
        parts = [p if p is not None else np.zeros((3, 256, 256), np.float32) for p in parts]
        stitched = np.concatenate([np.concatenate(parts[:2], axis=2), np.concatenate(parts[2:], axis=2)], axis=1)
        if whole is None:
            assert not stitched.any()
        else:
            np.testing.assert_allclose(whole, stitched, atol=1e-5)


def test_streaming_draws_one_tile_at_a_time(root, monkeypatch):
    """Level by level and tile by tile: no drawing call is ever larger than one tile (thumbnails aside)."""
    style, layout, renderer = build(6000, 5000, seed=4, cellularity=0.5)
    sizes = []
    original = renderer.optical_density

    def spy(ds, col0, row0, w, h):
        sizes.append((w, h))
        return original(ds, col0, row0, w, h)

    monkeypatch.setattr(renderer, "optical_density", spy)
    writer = PyramidWriter(renderer, 6000, 5000, 0.25, tile=256, workers=2)
    n = writer.write(root / "stream.tiff")
    assert n == writer.total_tiles == sum(-(-lv.width // 256) * -(-lv.height // 256) for lv in writer.levels)
    assert sizes and max(w * h for w, h in sizes) <= 256 * 256


def test_progress_and_abort_leave_no_partial_file(root):
    seen = []
    generate_slide(root / "p.tiff", 1024, 1024, seed=1, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == list(range(1, len(seen) + 1))

    def stop(done, total):
        if done > 3:
            raise KeyboardInterrupt

    target = root / "aborted.tiff"
    with pytest.raises(KeyboardInterrupt):
        generate_slide(target, 2048, 2048, seed=1, progress=stop)
    assert not target.exists() and not list(root.glob(".aborted.tiff*"))


@pytest.mark.parametrize("kwargs, match", [
    ({"width": 0}, "width"), ({"abnormal_fraction": 1.5}, "abnormal"), ({"mpp": 0}, "mpp"),
    ({"tile": 100}, "tile"), ({"cellularity": 0}, "cellularity"),
])
def test_bad_arguments(root, kwargs, match):
    args = {"width": 512, "height": 512, "seed": 0, **kwargs}
    with pytest.raises(CervixFMError, match=match):
        generate_slide(root / "bad.tiff", **args)


def test_outline_polygon_matches_drawn_area():
    o = Outline(x=100.0, y=80.0, r=40.0, aspect=1.3, rot=0.4, nedge=6, ephase=0.2, ejit=np.zeros(8),
                harm=np.array([0.03, 0.02, 0, 0, 0, 0]), hphase=np.zeros(6))
    from core.synthetic.shapes import polygon, signed_distance

    table = radius_table(o)
    poly = shape({"type": "Polygon", "coordinates": [polygon(o, table, 96).tolist()]})
    assert poly.is_valid and poly.area == pytest.approx(np.pi * 40**2, rel=0.02)
    xs = np.arange(0, 200) + 0.5
    ys = np.arange(0, 160) + 0.5
    inside = (signed_distance(o, table, xs, ys) < 0).sum()
    assert inside == pytest.approx(poly.area, rel=0.02)
