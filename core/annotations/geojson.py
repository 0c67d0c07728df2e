"""QuPath GeoJSON in and out: the format pathologists move annotations between tools with.

The dialect (REFERENCE §7): a FeatureCollection (QuPath also reads a bare list) of Features with ``id`` (UUID),
``geometry`` in level-0 pixels, ``properties.objectType``, ``classification {name, color}``, ``name``, ``color``,
``isLocked``, ``measurements`` (a map; QuPath before 0.4 wrote a list of ``{name, value}``), ``metadata`` (a map of
strings, where QuPath keeps what it does not understand) and, for cells, a Feature-level ``nucleusGeometry``.

Two traps are handled here so no caller has to. QuPath crops OpenSlide images to the ``openslide.bounds-*``
rectangle, so the coordinates it reads and writes are relative to that crop: pass the slide (or its bounds offset)
and import adds the offset, export subtracts it. And recent QuPath rejects invalid geometry: export repairs
self-intersections (``make_valid``), closes rings, and drops empty or non-finite shapes, each with a warning in the
returned report rather than a silent change.

Our own fields (score, provenance, review decision, notes) travel in ``properties.metadata`` as strings, so they
survive a round trip through QuPath.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import shapely
from shapely.geometry import shape as _shape

from ..errors import InputError
from ..io import atomic_write
from .classes import ClassRegistry, registry as _default_registry
from .model import OBJECT_TYPES, Annotation, Review, check_source, new_id

log = logging.getLogger(__name__)

_LEGACY_TYPES = {"PathAnnotationObject": "annotation", "PathDetectionObject": "detection",
                 "PathCellObject": "cell", "PathTileObject": "tile", "PathRootObject": "root",
                 "TMACoreObject": "tmaCore"}
_GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                   "GeometryCollection"}
_MAX_MESSAGES = 50
_BATCH = 4096
_META_KEYS = ("source", "score", "notes", "review.status", "review.previous", "review.target", "review.reviewer",
              "review.time")


@dataclass
class GeoJSONReport:
    """What an import or export did: the objects (import), how many were written (export), and every repair."""

    path: Path | None = None
    annotations: list[Annotation] = field(default_factory=list)
    written: int = 0
    #: Foreign members of the FeatureCollection (e.g. the ``cervixfm`` block of a sidecar).
    extra: dict = field(default_factory=dict)
    repaired: int = 0
    dropped: int = 0
    warnings: list[str] = field(default_factory=list)
    _more: int = 0

    def warn(self, message: str) -> None:
        if len(self.warnings) < _MAX_MESSAGES:
            self.warnings.append(message)
        else:
            self._more += 1

    def finish(self) -> "GeoJSONReport":
        if self._more:
            self.warnings.append(f"... and {self._more} more problem(s) like these")
            self._more = 0
        for w in self.warnings:
            log.warning("%s: %s", self.path or "GeoJSON", w)
        return self


def bounds_offset(offset_or_slide) -> tuple[float, float]:
    """(x, y) of the OpenSlide bounds crop QuPath measures from: a ``Slide``, an (x, y) pair, or None for (0, 0)."""
    if offset_or_slide is None:
        return 0.0, 0.0
    bounds = getattr(offset_or_slide, "bounds", None)
    if bounds is not None:
        return float(bounds[0]), float(bounds[1])
    x, y = offset_or_slide
    return float(x), float(y)


# ======================================================================================================= import
def read_geojson(path: str | os.PathLike, offset=None, *, source: str = "import",
                 classes: ClassRegistry | None = None) -> GeoJSONReport:
    """Read a QuPath GeoJSON file into ``Annotation`` objects (``report.annotations``), in level-0 pixels.

    ``offset``: the slide (its OpenSlide bounds) or an (x, y) added to every coordinate. ``source`` is the
    provenance for objects that do not carry their own (e.g. ``"ground-truth"``). Malformed files raise
    ``InputError`` naming the file and the line or feature; fixable problems become warnings in the report.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found. Check the path of the GeoJSON file.") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a folder, not a GeoJSON file.") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a GeoJSON text file (not UTF-8 at byte {exc.start}).") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc}).") from exc
    with _gc_paused():
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. "
                             "The file is truncated or was not written as GeoJSON.") from exc
        del text
        return parse_geojson(data, offset, source=source, classes=classes, name=str(path), _path=path)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of lists are created that are all still in use: the
    collector would scan them again and again for nothing (parsing 100,000 cells takes half the time without it)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_geojson(data: Any, offset=None, *, source: str = "import", classes: ClassRegistry | None = None,
                  name: str = "GeoJSON", _path: Path | None = None) -> GeoJSONReport:
    """``read_geojson`` for already-parsed JSON (a FeatureCollection, a list of Features, or one Feature)."""
    check_source(source)
    report = GeoJSONReport(path=_path)
    features = _features(data, name)
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        report.extra = {k: v for k, v in data.items() if k not in ("type", "features")}
    ox, oy = bounds_offset(offset)
    reg = classes or _default_registry()
    parsed: list[tuple[int, Mapping, dict]] = []  # (feature index, feature, annotation fields)
    for i, feature in enumerate(features):
        fields = _feature_fields(feature, i, name, source, reg, report)
        if fields is not None:
            parsed.append((i, feature, fields))
    indices = [i for i, _, _ in parsed]
    geoms = _cleaned(_build_geometries([f.get("geometry") for _, f, _ in parsed], indices, name, report),
                     [f"feature #{i}" for i in indices], report)
    nuc_pos = [k for k, (_, _, fields) in enumerate(parsed) if "nucleus_json" in fields]
    nuclei = np.full(len(parsed), None, dtype=object)
    if nuc_pos:
        nuclei[nuc_pos] = _cleaned(
            _build_geometries([parsed[k][2]["nucleus_json"] for k in nuc_pos], [indices[k] for k in nuc_pos],
                              name, report, what="nucleusGeometry"),
            [f"feature #{indices[k]} nucleus" for k in nuc_pos], report, count=False)
    if ox or oy:
        for arr in (geoms, nuclei):
            have = ~shapely.is_missing(arr)
            if have.any():
                arr[have] = shapely.transform(arr[have], lambda c: c + (ox, oy))
    seen: set[str] = set()
    for (i, feature, fields), geom, nucleus in zip(parsed, geoms, nuclei):
        fields.pop("nucleus_json", None)
        if geom is None:
            continue
        fid = fields.pop("id")
        if fid is None or fid in seen:
            if fid is not None:
                report.warn(f"feature #{i}: id {fid} is used twice; the second object gets a new id")
            fid = new_id()
        seen.add(fid)
        try:
            report.annotations.append(Annotation(geometry=geom, nucleus=nucleus, id=fid, **fields))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name}: feature #{i}: {exc}") from exc
    return report.finish()


def _features(data: Any, name: str) -> list:
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise InputError(f"{name}: expected a GeoJSON FeatureCollection or a list of features, "
                         f"found a JSON {type(data).__name__}.")
    kind = data.get("type")
    if kind == "FeatureCollection" or (kind is None and "features" in data):
        feats = data.get("features")
        if not isinstance(feats, list):
            raise InputError(f"{name}: the FeatureCollection has no 'features' list.")
        return feats
    if kind == "Feature":
        return [data]
    if kind in _GEOMETRY_TYPES:
        raise InputError(f"{name}: holds a bare {kind} geometry, not features; wrap it in a Feature "
                         "(QuPath: File > Export objects as GeoJSON writes the right form).")
    raise InputError(f"{name}: expected a GeoJSON FeatureCollection, found type {kind!r}.")


def _feature_fields(feature: Any, i: int, name: str, source: str, reg: ClassRegistry,
                    report: GeoJSONReport) -> dict | None:
    """The Annotation fields of one Feature except its geometry; None to skip it."""
    where = f"{name}: feature #{i}"
    if not isinstance(feature, dict):
        raise InputError(f"{where} is a JSON {type(feature).__name__}, not a Feature object.")
    kind = feature.get("type", "Feature")
    if kind != "Feature":
        raise InputError(f"{where} has type {kind!r}; expected 'Feature'.")
    if "geometry" not in feature:
        raise InputError(f"{where} has no 'geometry'.")
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise InputError(f"{where}: 'properties' must be an object, found {type(props).__name__}.")

    raw_id = feature.get("id")
    object_type = _object_type(props, raw_id, i, report)
    if object_type is None:
        return None
    fid = None
    if raw_id is not None and str(raw_id) not in _LEGACY_TYPES:
        fid = str(raw_id)

    meta = props.get("metadata") if isinstance(props.get("metadata"), dict) else {}
    fields: dict[str, Any] = {"id": fid, "object_type": object_type}
    fields["classification"] = _classification(props.get("classification"), reg, where)
    fields["measurements"] = _measurements(props.get("measurements"), i, report)
    if props.get("name") is not None:
        fields["name"] = str(props["name"])
    if props.get("color") is not None:
        fields["color"] = _color(props["color"], where, "color")
    locked = props.get("isLocked", False)
    fields["locked"] = bool(locked) if isinstance(locked, (bool, int)) else str(locked).lower() == "true"
    fields.update(_metadata_fields(meta, source, i, report))
    nucleus = feature.get("nucleusGeometry", props.get("nucleusGeometry"))
    if nucleus is not None:
        if object_type != "cell":
            report.warn(f"feature #{i}: a nucleus on a {object_type} object was ignored (only cells have one)")
        else:
            fields["nucleus_json"] = nucleus
    return fields


def _object_type(props: Mapping, raw_id, i: int, report: GeoJSONReport) -> str | None:
    kind = props.get("objectType", props.get("object_type", props.get("type")))
    if kind is None and raw_id is not None and str(raw_id) in _LEGACY_TYPES:
        kind = _LEGACY_TYPES[str(raw_id)]  # QuPath 0.2 stored the type in "id"
    if kind is None:
        return "annotation"
    kind = _LEGACY_TYPES.get(str(kind), str(kind))
    if kind in OBJECT_TYPES:
        return kind
    if kind == "root":
        return None
    report.warn(f"feature #{i}: object type {kind!r} is not supported; imported as an annotation")
    return "annotation"


def _classification(value: Any, reg: ClassRegistry, where: str):
    if value is None:
        return None
    if isinstance(value, str):
        return reg.get(value) if value.strip() else None
    if not isinstance(value, dict):
        raise InputError(f"{where}: 'classification' must be an object with a name, found {value!r}.")
    name = value.get("name")
    if name is None and isinstance(value.get("names"), list):  # derived classes: ["Tumor", "Positive"]
        name = ": ".join(str(n) for n in value["names"])
    if name is None or not str(name).strip():
        return None
    color = value.get("color", value.get("colorRGB"))
    return reg.get(str(name), _color(color, where, "classification color") if color is not None else None)


def _color(value: Any, where: str, what: str) -> tuple[int, int, int]:
    from .classes import as_rgb

    try:
        return as_rgb(value)
    except ValueError as exc:
        raise InputError(f"{where}: {what} {value!r} is not an [r, g, b] colour or a packed integer.") from exc


def _measurements(value: Any, i: int, report: GeoJSONReport) -> dict[str, float]:
    if value is None:
        return {}
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):  # QuPath < 0.4: [{"name": ..., "value": ...}, ...]
        items = []
        for m in value:
            if isinstance(m, dict) and "name" in m:
                items.append((m["name"], m.get("value")))
            else:
                report.warn(f"feature #{i}: a measurement entry {m!r} has no name and was skipped")
    else:
        report.warn(f"feature #{i}: 'measurements' is neither a map nor a list and was skipped")
        return {}
    out: dict[str, float] = {}
    for key, v in items:
        if v is None:
            out[str(key)] = math.nan
            continue
        try:
            out[str(key)] = float(v)
        except (TypeError, ValueError):
            report.warn(f"feature #{i}: measurement {key!r} = {v!r} is not a number and was skipped")
    return out


def _metadata_fields(meta: Mapping, default_source: str, i: int, report: GeoJSONReport) -> dict[str, Any]:
    out: dict[str, Any] = {"source": default_source}
    src = meta.get("source")
    if src is not None:
        try:
            out["source"] = check_source(str(src))
        except ValueError:
            report.warn(f"feature #{i}: unknown source {src!r}; kept as {default_source!r}")
    if meta.get("score") not in (None, ""):
        try:
            out["score"] = float(meta["score"])
        except (TypeError, ValueError):
            report.warn(f"feature #{i}: score {meta['score']!r} is not a number and was skipped")
    if meta.get("notes") is not None:
        out["notes"] = str(meta["notes"])
    if meta.get("review.status") is not None:
        try:
            out["review"] = Review.from_dict({k.split(".", 1)[1]: v for k, v in meta.items()
                                              if k.startswith("review.") and v not in (None, "")})
        except (ValueError, TypeError, KeyError) as exc:
            report.warn(f"feature #{i}: review decision not understood ({exc}) and was skipped")
    return out


def _one_geometry(gj: Any, i: int, name: str, what: str = "geometry"):
    where = f"{name}: feature #{i}"
    if not isinstance(gj, dict):
        raise InputError(f"{where}: '{what}' must be a GeoJSON geometry object, found {type(gj).__name__}.")
    kind = gj.get("type")
    if kind not in _GEOMETRY_TYPES:
        raise InputError(f"{where}: unsupported {what} type {kind!r} "
                         f"(expected one of {', '.join(sorted(_GEOMETRY_TYPES))}).")
    try:
        geom = _shape(gj)
    except Exception as exc:  # noqa: BLE001 - shapely raises several types for bad coordinate arrays
        raise InputError(f"{where}: malformed {kind} coordinates ({exc}).") from exc
    if kind != "GeometryCollection" and geom.has_z:
        geom = shapely.force_2d(geom)
    return geom


def _simple_ring(gj: Any) -> np.ndarray | None:
    """The exterior ring of a hole-free Polygon as an (n, 2) array, or None when it needs the general path."""
    if not isinstance(gj, dict) or gj.get("type") != "Polygon":
        return None
    rings = gj.get("coordinates")
    if not isinstance(rings, list) or len(rings) != 1:
        return None
    try:
        ring = np.asarray(rings[0], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if ring.ndim != 2 or ring.shape[0] < 4 or ring.shape[1] != 2 or not (ring[0] == ring[-1]).all():
        return None
    return ring


def _build_geometries(gjs: list, indices: list[int], name: str, report: GeoJSONReport,
                      what: str = "geometry") -> np.ndarray:
    """Shapely geometries for the features; hole-free polygons (nearly every cell) are built in one vectorised
    call, which is several times faster than one constructor per feature; anything else goes through shapely."""
    out = np.full(len(gjs), None, dtype=object)
    fast_pos, fast_rings = [], []
    for pos, gj in enumerate(gjs):
        if gj is None:
            continue  # reported by _cleaned as an empty geometry
        ring = _simple_ring(gj)
        if ring is not None:
            fast_pos.append(pos)
            fast_rings.append(ring)
        else:
            out[pos] = _one_geometry(gj, indices[pos], name, what)
    for start in range(0, len(fast_rings), 65536):
        rings = fast_rings[start:start + 65536]
        lens = np.fromiter((len(r) for r in rings), np.int64, len(rings))
        ring_offsets = np.concatenate([[0], np.cumsum(lens)])
        polys = shapely.from_ragged_array(shapely.GeometryType.POLYGON, np.concatenate(rings),
                                          (ring_offsets, np.arange(len(rings) + 1)))
        out[fast_pos[start:start + 65536]] = polys
    return out


def _cleaned(geoms: np.ndarray, wheres: list[str], report: GeoJSONReport, count: bool = True) -> np.ndarray:
    """Valid geometries; None (with a warning) where nothing usable is left. Checks run vectorised; only the
    few bad geometries are handled one by one. ``count=False`` for nuclei: a bad nucleus does not drop its cell."""
    present = ~shapely.is_missing(geoms)
    ok = present.copy()
    ok[present] = ~shapely.is_empty(geoms[present]) & np.isfinite(shapely.bounds(geoms[present])).all(axis=1)
    valid = ok.copy()
    valid[ok] = shapely.is_valid(geoms[ok])
    for j in np.flatnonzero(ok & ~valid):
        geom = geoms[j]
        fixed = repair(geom)
        if fixed is None:
            ok[j] = False
            continue
        report.repaired += 1
        report.warn(f"{wheres[j]}: invalid {geom.geom_type} ({shapely.is_valid_reason(geom)}) repaired")
        geoms[j] = fixed
    for j in np.flatnonzero(~ok):
        if count:
            report.dropped += 1
        geom = geoms[j]
        why = ("no geometry" if geom is None else "empty geometry" if geom.is_empty
               else "non-finite coordinates" if not np.isfinite(shapely.bounds(geom)).all()
               else f"invalid {geom.geom_type} with nothing left after repair")
        report.warn(f"{wheres[j]}: {why}, dropped")
        geoms[j] = None
    return geoms


def repair(geom):
    """A valid version of ``geom`` of the same dimension (polygons stay polygonal), or None if it vanishes.

    ``make_valid`` may split a bow-tie into a MultiPolygon plus stray lines; the lines are dropped so a polygon
    annotation stays a polygon.
    """
    fixed = shapely.make_valid(geom)
    dim = shapely.get_dimensions(geom)
    if fixed.geom_type == "GeometryCollection" or shapely.get_dimensions(fixed) != dim:
        parts = [p for p in shapely.get_parts(fixed) if shapely.get_dimensions(p) == dim and not p.is_empty]
        if not parts:
            return None
        fixed = shapely.union_all(parts) if len(parts) > 1 else parts[0]
    if fixed.is_empty:
        return None
    return fixed


# ======================================================================================================= export
def annotation_properties(a: Annotation) -> dict[str, Any]:
    """The Feature ``properties`` of an object, QuPath's keys first, ours in ``metadata``."""
    props: dict[str, Any] = {"objectType": a.object_type}
    if a.name is not None:
        props["name"] = a.name
    if a.color is not None:
        props["color"] = list(a.color)
    if a.classification is not None:
        props["classification"] = {"name": a.classification.name, "color": list(a.classification.color)}
    if a.locked:
        props["isLocked"] = True
    if a.measurements:
        props["measurements"] = {k: (v if math.isfinite(v) else None) for k, v in a.measurements.items()}
    meta = {"source": a.source}
    if a.score is not None:
        meta["score"] = repr(float(a.score))
    if a.notes is not None:
        meta["notes"] = a.notes
    if a.review is not None:
        for k, v in a.review.to_dict().items():
            meta[f"review.{k}"] = repr(v) if isinstance(v, float) else str(v)
    props["metadata"] = meta
    return props


def annotation_to_feature(a: Annotation, offset=None) -> dict[str, Any]:
    """One GeoJSON Feature (as a dict) in the coordinates of a QuPath that cropped to ``offset``."""
    ox, oy = bounds_offset(offset)
    geom = a.geometry if not (ox or oy) else shapely.transform(a.geometry, lambda c: c - (ox, oy))
    feature: dict[str, Any] = {"type": "Feature", "id": a.id, "geometry": json.loads(shapely.to_geojson(geom))}
    if a.object_type == "cell" and a.nucleus is not None and not a.nucleus.is_empty:
        nuc = a.nucleus if not (ox or oy) else shapely.transform(a.nucleus, lambda c: c - (ox, oy))
        feature["nucleusGeometry"] = json.loads(shapely.to_geojson(nuc))
    feature["properties"] = annotation_properties(a)
    return feature


def write_geojson(path: str | os.PathLike, annotations: Iterable[Annotation], offset=None, *,
                  extra: Mapping[str, Any] | None = None, precision: int | None = None) -> GeoJSONReport:
    """Write objects as a QuPath FeatureCollection, atomically, streamed in batches (memory stays flat).

    ``offset``: the slide (its OpenSlide bounds) or an (x, y) subtracted from every coordinate. Invalid
    geometry is repaired, empty or non-finite geometry dropped; both are counted and listed in the report.
    ``extra`` adds foreign members to the FeatureCollection (a sidecar records its slide there).
    ``precision``: decimals kept per coordinate (None: exact). Model outputs do not need 17 digits; 2 decimals
    (1/100 px) halve the file and its parse time. Rounding happens before the validity check, so a polygon
    that rounding folds is repaired like any other.
    """
    path = Path(path)
    report = GeoJSONReport(path=path)
    ox, oy = bounds_offset(offset)

    def features() -> Iterable[str]:
        batch: list[Annotation] = []
        for a in annotations:
            batch.append(a)
            if len(batch) >= _BATCH:
                yield from _encode_batch(batch, ox, oy, report, precision)
                batch = []
        if batch:
            yield from _encode_batch(batch, ox, oy, report, precision)

    report.written = write_feature_collection(path, features(), extra=extra)
    return report.finish()


def write_feature_collection(path: str | os.PathLike, features: Iterable[str | Mapping], *,
                             extra: Mapping[str, Any] | None = None) -> int:
    """Stream Features (JSON strings or dicts) into a FeatureCollection file atomically; returns the count.

    One feature per line, ASCII only, so any locale writes it and a person can ``grep`` or ``head`` it.
    """
    n = 0
    with atomic_write(path, "w") as fh:
        fh.write('{"type": "FeatureCollection", ')
        for key, value in (extra or {}).items():
            fh.write(f"{json.dumps(str(key))}: {json.dumps(value, separators=(',', ':'), allow_nan=False)}, ")
        fh.write('"features": [\n')
        for feature in features:
            if n:
                fh.write(",\n")
            fh.write(feature if isinstance(feature, str) else json.dumps(feature, separators=(",", ":")))
            n += 1
        fh.write("\n]}\n")
    return n


def _to_file_frame(ox: float, oy: float, precision: int | None):
    """The coordinate map into the file's frame (bounds offset subtracted, then rounded), or None for identity.
    Rounding after the shift keeps the written decimals clean; validity is checked on what is written."""
    if not (ox or oy) and precision is None:
        return None
    shift = np.array([ox, oy])
    if precision is None:
        return lambda c: c - shift
    return lambda c: np.round(c - shift, precision)


def _encode_batch(batch: list[Annotation], ox: float, oy: float, report: GeoJSONReport,
                  precision: int | None = None) -> list[str]:
    to_file = _to_file_frame(ox, oy, precision)
    geoms = np.empty(len(batch), dtype=object)
    geoms[:] = [a.geometry for a in batch]
    ok = ~shapely.is_empty(geoms) & np.isfinite(shapely.bounds(geoms)).all(axis=1)
    if to_file is not None:
        geoms[ok] = shapely.transform(geoms[ok], to_file)
    valid = ok.copy()
    valid[ok] = shapely.is_valid(geoms[ok])
    for j in np.flatnonzero(ok & ~valid):
        fixed = repair(geoms[j])
        a = batch[j]
        if fixed is None:
            ok[j] = False
        else:
            report.repaired += 1
            report.warn(f"object {a.id} ({a.object_type}): invalid geometry ({shapely.is_valid_reason(geoms[j])}) "
                        "repaired for export")
            geoms[j] = fixed
    for j in np.flatnonzero(~ok):
        report.dropped += 1
        report.warn(f"object {batch[j].id} ({batch[j].object_type}): empty or non-finite geometry, not exported")
    texts = np.full(len(batch), None, dtype=object)
    texts[ok] = shapely.to_geojson(geoms[ok])
    out = []
    for j in np.flatnonzero(ok):
        a = batch[j]
        parts = ['{"type":"Feature","id":', json.dumps(a.id), ',"geometry":', texts[j]]
        if a.object_type == "cell" and a.nucleus is not None:
            nuc = _export_nucleus(a, to_file, report)
            if nuc is not None:
                parts += [',"nucleusGeometry":', nuc]
        parts += [',"properties":', json.dumps(annotation_properties(a), separators=(",", ":")), "}"]
        out.append("".join(parts))
    return out


def _export_nucleus(a: Annotation, to_file, report: GeoJSONReport) -> str | None:
    nuc = a.nucleus
    if nuc.is_empty or not np.isfinite(shapely.bounds(nuc)).all():
        return None
    if to_file is not None:
        nuc = shapely.transform(nuc, to_file)
    if not nuc.is_valid:
        nuc = repair(nuc)
        if nuc is None:
            report.warn(f"object {a.id}: invalid nucleus with no area, not exported")
            return None
        report.repaired += 1
    return shapely.to_geojson(nuc)
