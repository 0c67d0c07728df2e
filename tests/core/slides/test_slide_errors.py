"""Bad input raises SlideError naming the file and the problem; a damaged tile spoils only itself."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from core.errors import CervixFMError, SlideError
from core.slides import open_slide


def _raises(path, *words):
    with pytest.raises(SlideError) as info:
        open_slide(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for word in words:
        assert word in msg.lower(), msg
    assert isinstance(info.value, CervixFMError)
    return msg


def test_missing_path(tmp_path):
    _raises(tmp_path / "nope.svs", "not found")


def test_missing_path_suggests_same_stem(tmp_path):
    (tmp_path / "Case1.SVS").write_bytes(b"x")
    msg = _raises(tmp_path / "case1.svs", "not found")
    assert "Case1.SVS" in msg


def test_directory(tmp_path):
    _raises(tmp_path, "folder")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _raises(path, "empty", "0 bytes")


def test_text_file_renamed_svs(tmp_path):
    path = tmp_path / "notes.svs"
    path.write_text("Patient notes, definitely not a slide.\n" * 10)
    _raises(path, "not a slide or image")


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.995])
def test_truncated_tiff(synth, tmp_path, fraction):
    data = synth.path.read_bytes()
    path = tmp_path / f"truncated_{fraction}.tiff"
    path.write_bytes(data[: int(len(data) * fraction)])
    _raises(path, "truncated", "bytes")


def test_truncated_png(plain_images, tmp_path):
    data = plain_images["png"].read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    _raises(path, "damaged or truncated")


@pytest.mark.filterwarnings("ignore:.*zero-size")
def test_zero_size_image_header(tmp_path):
    # A syntactically valid TIFF header whose image is 0 x 0 pixels.
    path = tmp_path / "zero.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(None, shape=(0, 0), dtype=np.uint8)
    with pytest.raises(SlideError) as info:
        open_slide(path)
    assert str(path) in str(info.value)


def _damage_tile(src, dst, index):
    shutil.copy(src, dst)
    with tifffile.TiffFile(dst) as tf:
        page = tf.pages[0]
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        tile = page.tilewidth
        cols = -(-page.imagewidth // tile)
    with open(dst, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\0" * min(count, 256))
    return (index % cols) * tile, (index // cols) * tile, tile


def test_corrupt_tile_fails_alone(synth, tmp_path):
    path = tmp_path / "damaged.tiff"
    x, y, tile = _damage_tile(synth.path, path, index=9)  # level 0, column 1, row 1 of an 8 x 8 grid
    with open_slide(synth.path) as good, open_slide(path) as slide:
        with pytest.raises(SlideError) as info:
            slide.read_region((x + 10, y + 10), 0, (64, 64))
        msg = str(info.value)
        assert str(path) in msg and "damaged" in msg and f"x={x + 10}" in msg
        # The handle was replaced: other tiles (and other levels) still read, with the right pixels.
        for loc, level in (((0, 0), 0), ((x + tile, y), 0), ((x, y), 1)):
            assert np.array_equal(slide.read_region(loc, level, (128, 128)), good.read_region(loc, level, (128, 128)))
        with pytest.raises(SlideError):  # still damaged, still reported, still isolated
            slide.read_region((x, y), 0, (8, 8))
        assert slide.read_region((0, 0), 0, (8, 8)).shape == (8, 8, 3)


def test_closed_slide(synth):
    slide = open_slide(synth.path)
    slide.close()
    with pytest.raises(SlideError, match="closed"):
        slide.read_region((0, 0), 0, (4, 4))
