"""Export regions of a slide as image crops at a chosen resolution, with their objects, and draw objects on images.

``export_regions`` writes one folder per export: for each region a crop (read through ``Slide.read_scaled`` at
the requested µm/px or magnification), the objects overlapping it as QuPath GeoJSON in crop pixel coordinates
(so the pair opens in QuPath, or feeds a training script, as is), optionally the crop with the objects drawn on
it, then one ``measurements.csv`` (a row per object per region) and a ``manifest.json`` that says where each crop
came from. The folder is assembled under a temporary name and renamed when complete: an export is there whole or
not at all.

``render_overlay`` draws outlines (and optional translucent fills) of objects onto an RGB array with
scikit-image: the same picture for exports and reports that the viewer draws with Qt.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from ..errors import InputError
from ..io import atomic_write, atomic_write_text
from .geojson import write_geojson
from .model import Annotation
from .store import AnnotationStore

#: Largest crop written, in output pixels (a 10,000 x 10,000 RGB crop is 300 MB in memory).
MAX_CROP_PIXELS = 100_000_000
IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF"}


@dataclass
class RegionExport:
    """What ``export_regions`` wrote: the folder, one entry per region (as in manifest.json), and warnings."""

    folder: Path
    regions: list[dict] = field(default_factory=list)
    objects: int = 0
    warnings: list[str] = field(default_factory=list)


def resolve_downsample(slide, mpp: float | None = None, magnification: float | None = None) -> float:
    """Level-0 pixels per output pixel for a target µm/px or objective magnification (40x = 0.25 µm/px).

    Exporting finer than the scan would invent detail, so it is refused with the slide's own resolution named.
    """
    if mpp is not None and magnification is not None:
        raise InputError("Give either a resolution in µm/px or a magnification, not both.")
    base = float(slide.mpp[0])
    if magnification is not None:
        if not magnification > 0:
            raise InputError(f"Magnification must be positive, got {magnification}.")
        mpp = 10.0 / float(magnification)
    if mpp is None:
        return 1.0
    if not (mpp > 0 and math.isfinite(mpp)):
        raise InputError(f"Resolution must be a positive number of µm/px, got {mpp}.")
    ds = float(mpp) / base
    if ds < 1.0 - 1e-6:
        raise InputError(f"{slide.path.name} is scanned at {base:.4g} µm/px ({10 / base:.0f}x); an export at "
                         f"{mpp:.4g} µm/px would be upsampled. Choose {base:.4g} µm/px or coarser.")
    return ds


def region_geometry(region) -> BaseGeometry:
    """A region as a shapely geometry: an Annotation's geometry, a geometry, or an (x, y, w, h) rectangle."""
    if isinstance(region, Annotation):
        return region.geometry
    if isinstance(region, BaseGeometry):
        return region
    try:
        x, y, w, h = (float(v) for v in region)
    except (TypeError, ValueError) as exc:
        raise InputError(f"A region must be an annotation, a geometry or (x, y, w, h), got {region!r}.") from exc
    if not (w > 0 and h > 0):
        raise InputError(f"Region ({x:g}, {y:g}, {w:g}, {h:g}) has no area: width and height must be positive.")
    return box(x, y, x + w, y + h)


def to_crop(a: Annotation, origin: tuple[float, float], scale: tuple[float, float]) -> Annotation:
    """``a`` in the pixel coordinates of a crop whose top-left is ``origin`` (level-0) at ``scale`` (output px per
    level-0 px, x and y)."""
    ox, oy = origin
    sx, sy = scale

    def f(c):
        return (c - (ox, oy)) * (sx, sy)

    nucleus = shapely.transform(a.nucleus, f) if a.nucleus is not None else None
    return a.replace(geometry=shapely.transform(a.geometry, f), nucleus=nucleus)


def export_regions(slide, regions: Iterable, out_dir: str | os.PathLike, *,
                   objects: AnnotationStore | Iterable[Annotation] = (), mpp: float | None = None,
                   magnification: float | None = None, name: str | None = None, image_format: str = "png",
                   burn: bool = False, qupath_offset: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> RegionExport:
    """Write crops of ``regions`` with the ``objects`` that overlap each one into a new folder under ``out_dir``.

    ``regions``: annotations, shapely geometries or (x, y, w, h) level-0 rectangles; each crop covers the
    region's bounding box. ``mpp`` / ``magnification`` pick the output resolution (default: the scan's own).
    ``burn`` also writes ``<region>_overlay.<ext>`` with the objects drawn. ``name`` names the export folder
    (default ``<slide>_export_<time>``; ``-2``, ``-3`` ... are appended if taken). The crops' GeoJSON is in crop
    pixels; ``measurements.csv`` and ``manifest.json`` give level-0 positions (with ``qupath_offset`` the
    manifest's level-0 boxes are also given in QuPath's bounds-cropped frame). ``progress(done, total)`` is called
    after each region (a viewer shows it); raising from it stops the export and leaves no folder behind.
    """
    fmt = image_format.lower().lstrip(".")
    if fmt not in IMAGE_FORMATS:
        raise InputError(f"Image format {image_format!r} is not supported; use one of {', '.join(IMAGE_FORMATS)}.")
    ds = resolve_downsample(slide, mpp, magnification)
    region_list = list(regions)
    if not region_list:
        raise InputError("Nothing to export: no regions were given (draw or select at least one region).")
    geoms = [region_geometry(r) for r in region_list]
    plans = [_plan(g, ds, i) for i, g in enumerate(geoms)]
    store = objects if isinstance(objects, AnnotationStore) else AnnotationStore(objects)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = _unique_folder(out_dir, _slug(name) if name else f"{_slug(slide.path.stem)}_export_"
                           f"{time.strftime('%Y%m%d-%H%M%S')}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=out_dir))
    result = RegionExport(folder=final)
    rows: list[dict] = []
    mpp_x, mpp_y = (float(v) for v in slide.mpp)
    try:
        for i, (region, geom, (x0, y0, w0, h0, out_w, out_h)) in enumerate(zip(region_list, geoms, plans)):
            stem = f"region_{i + 1:03d}"
            label = (region.name or region.class_name) if isinstance(region, Annotation) else None
            if label:
                stem += "_" + _slug(label)[:40]
            image = slide.read_scaled(x0, y0, w0, h0, out_w, out_h)
            scale = (out_w / w0, out_h / h0)
            inside = store.query_geometry(geom)
            _write_image(tmp / f"{stem}.{fmt}", image, fmt)
            cropped = [to_crop(a, (x0, y0), scale) for a in inside]
            report = write_geojson(tmp / f"{stem}.geojson", cropped)
            result.warnings += [f"{stem}: {w}" for w in report.warnings]
            if burn:
                _write_image(tmp / f"{stem}_overlay.{fmt}", render_overlay(image, cropped), fmt)
            rows += [_row(stem, a, mpp_x, mpp_y) for a in inside]
            result.objects += len(inside)
            entry = {
                "region": stem, "image": f"{stem}.{fmt}", "geojson": f"{stem}.geojson",
                "level0_box": [x0, y0, w0, h0], "size": [out_w, out_h],
                "downsample": ds, "mpp": [mpp_x * w0 / out_w, mpp_y * h0 / out_h], "objects": len(inside),
                "region_geometry": json.loads(shapely.to_geojson(geom)),
            }
            if isinstance(region, Annotation):
                entry.update(id=region.id, name=region.name, classification=region.class_name)
            if qupath_offset:
                bx, by = slide.bounds[:2]
                entry["qupath_box"] = [x0 - bx, y0 - by, w0, h0]
            if burn:
                entry["overlay"] = f"{stem}_overlay.{fmt}"
            result.regions.append(entry)
            if progress is not None:
                progress(i + 1, len(plans))
        _write_csv(tmp / "measurements.csv", rows)
        manifest = {
            "slide": str(slide.path), "slide_mpp": [mpp_x, mpp_y], "mpp_source": getattr(slide, "mpp_source", None),
            "downsample": ds, "target_mpp": mpp_x * ds, "bounds": list(slide.bounds),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "regions": result.regions, "warnings": result.warnings,
            "coordinates": "region GeoJSON: crop pixels; level0_box: level-0 pixels of the slide (x, y, w, h)",
        }
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1))
        mask = _umask()
        for f in tmp.iterdir():  # atomic_write leaves mkstemp's owner-only mode; an export is meant to be shared
            os.chmod(f, 0o666 & ~mask)
        os.chmod(tmp, 0o777 & ~mask)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _umask() -> int:
    from ..io import _umask as umask

    return umask()


def _plan(geom: BaseGeometry, ds: float, i: int) -> tuple[int, int, int, int, int, int]:
    """(x0, y0, w0, h0, out_w, out_h): the whole-pixel level-0 box around ``geom`` and its output size."""
    if geom.is_empty:
        raise InputError(f"Region #{i + 1} is empty.")
    if shapely.get_dimensions(geom) < 2:
        raise InputError(f"Region #{i + 1} is a {geom.geom_type}, which has no area: export rectangles or "
                         "polygons (or give an (x, y, w, h) box around the points).")
    bx0, by0, bx1, by1 = geom.bounds
    x0, y0 = math.floor(bx0), math.floor(by0)
    w0, h0 = max(1, math.ceil(bx1) - x0), max(1, math.ceil(by1) - y0)
    out_w, out_h = max(1, round(w0 / ds)), max(1, round(h0 / ds))
    if out_w * out_h > MAX_CROP_PIXELS:
        raise InputError(f"Region #{i + 1} ({w0} x {h0} level-0 px) would be a {out_w} x {out_h} px image, more "
                         f"than {MAX_CROP_PIXELS // 1_000_000} megapixels. Export it at a coarser resolution or "
                         "split it into smaller regions.")
    return x0, y0, w0, h0, out_w, out_h


def _unique_folder(parent: Path, name: str) -> Path:
    candidate, n = parent / name, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{name}-{n}"
    return candidate


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", str(text)).strip("._")
    return slug or "export"


def _write_image(path: Path, image: np.ndarray, fmt: str) -> None:
    from PIL import Image

    kwargs = {"quality": 92} if IMAGE_FORMATS[fmt] == "JPEG" else {}
    with atomic_write(path, "wb") as fh:
        Image.fromarray(np.ascontiguousarray(image)).save(fh, format=IMAGE_FORMATS[fmt], **kwargs)


_BASE_COLUMNS = ["region", "id", "object_type", "class", "name", "source", "score", "review", "centroid_x",
                 "centroid_y", "area_um2", "perimeter_um"]


def _row(region: str, a: Annotation, mpp_x: float, mpp_y: float) -> dict:
    g = a.geometry
    c = g.centroid if not g.is_empty else None
    row = {
        "region": region, "id": a.id, "object_type": a.object_type, "class": a.class_name or "",
        "name": a.name or "", "source": a.source, "score": "" if a.score is None else a.score,
        "review": a.review.status if a.review else "",
        "centroid_x": round(c.x, 2) if c else "", "centroid_y": round(c.y, 2) if c else "",
        "area_um2": round(g.area * mpp_x * mpp_y, 4),
        "perimeter_um": round(g.length * math.sqrt(mpp_x * mpp_y), 4),
    }
    row.update(a.measurements)
    return row


def _write_csv(path: Path, rows: list[dict]) -> None:
    """One row per object and region; level-0 centroids; areas from the geometry in µm²; then the measurements."""
    extra = sorted({k for r in rows for k in r} - set(_BASE_COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_BASE_COLUMNS + extra, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path, "wb") as fh:  # utf-8 whatever the locale, so "µm^2" column names survive
        fh.write(buf.getvalue().encode("utf-8"))


# ============================================================================================ drawing objects
def render_overlay(image: np.ndarray, annotations: Iterable[Annotation], origin: tuple[float, float] = (0.0, 0.0),
                   scale: float | tuple[float, float] = 1.0, *, thickness: int = 2, fill_opacity: float = 0.0,
                   point_radius: int = 5, nuclei: bool = True) -> np.ndarray:
    """A copy of ``image`` with the objects drawn: outlines in their colour (``display_color``), optional
    translucent fills, points as rings, cell nuclei as thin outlines.

    Object coordinates map to pixels as ``(xy - origin) * scale``: (0, 0) and 1 for objects already in crop
    pixels, a level-0 origin and 1/downsample for objects in slide coordinates.
    """
    from skimage.draw import disk, polygon as fill_polygon

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("render_overlay expects an (H, W, 3) uint8 RGB image")
    out = image.copy()
    h, w = out.shape[:2]
    sx, sy = (scale, scale) if np.isscalar(scale) else scale
    ox, oy = origin
    items = [a for a in annotations if not a.geometry.is_empty]

    def px(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (coords[:, 1] - oy) * sy, (coords[:, 0] - ox) * sx  # rows, cols

    if fill_opacity > 0:
        for a in items:
            color = np.asarray(a.display_color, np.float32)
            for poly in _polygons(a.geometry):
                r, c = px(np.asarray(poly.exterior.coords))
                rr, cc = fill_polygon(r, c, shape=(h, w))
                if len(rr):
                    out[rr, cc] = (out[rr, cc] * (1 - fill_opacity) + color * fill_opacity).astype(np.uint8)
    for a in items:
        color = np.asarray(a.display_color, np.uint8)
        for line in _lines(a.geometry):
            r, c = px(line)
            _stroke(out, r, c, thickness, color)
        if nuclei and a.nucleus is not None and not a.nucleus.is_empty:
            for line in _lines(a.nucleus):
                r, c = px(line)
                _stroke(out, r, c, max(1, thickness // 2), color)
        for pt in _points(a.geometry):
            r, c = px(pt[None, :])
            rr, cc = disk((r[0], c[0]), point_radius + thickness / 2, shape=(h, w))
            keep = np.hypot(rr - r[0], cc - c[0]) >= point_radius - thickness / 2
            out[rr[keep], cc[keep]] = color
    return out


def _polygons(geom) -> list:
    return [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon"] if geom.geom_type != "Polygon" \
        else [geom]


def _lines(geom) -> list[np.ndarray]:
    """Every ring and line of ``geom`` as coordinate arrays (points are drawn separately)."""
    out = []
    for part in shapely.get_parts(geom):
        if part.geom_type == "Polygon":
            out.append(np.asarray(part.exterior.coords))
            out += [np.asarray(r.coords) for r in part.interiors]
        elif part.geom_type in ("LineString", "LinearRing"):
            out.append(np.asarray(part.coords))
        elif part.geom_type == "GeometryCollection" or part.geom_type.startswith("Multi"):
            out += _lines(part)
    return out


def _points(geom) -> list[np.ndarray]:
    return [np.asarray(p.coords[0]) for p in shapely.get_parts(geom) if p.geom_type == "Point"]


def _stroke(out: np.ndarray, rows: np.ndarray, cols: np.ndarray, thickness: int, color: np.ndarray) -> None:
    """Draw the polyline through (rows, cols) ``thickness`` px wide, clipped to the image."""
    from skimage.draw import line

    h, w = out.shape[:2]
    r = np.round(rows).astype(np.int64)
    c = np.round(cols).astype(np.int64)
    if len(r) < 2:
        return
    # Skip a line far outside the image entirely (cheap test before rasterising it).
    if r.max() < -thickness or c.max() < -thickness or r.min() > h + thickness or c.min() > w + thickness:
        return
    rr_parts, cc_parts = [], []
    for i in range(len(r) - 1):
        rr, cc = line(int(r[i]), int(c[i]), int(r[i + 1]), int(c[i + 1]))
        rr_parts.append(rr)
        cc_parts.append(cc)
    rr, cc = np.concatenate(rr_parts), np.concatenate(cc_parts)
    half = (thickness - 1) / 2.0
    offsets = [(dr, dc) for dr in range(-int(math.floor(half)), int(math.ceil(half)) + 1)
               for dc in range(-int(math.floor(half)), int(math.ceil(half)) + 1)
               if thickness <= 2 or dr * dr + dc * dc <= (half + 0.5) ** 2]
    for dr, dc in offsets:
        r2, c2 = rr + dr, cc + dc
        keep = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < w)
        out[r2[keep], c2[keep]] = color
