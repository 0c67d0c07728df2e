"""Annotations: the objects drawn, detected and reviewed on a slide, kept apart from any view (napari style).

Coordinates are level-0 pixels (x right, y down) and geometry is shapely, everywhere in this package; only the Qt
view converts to scene units, and only GeoJSON files see QuPath's bounds-cropped frame.

The API, in the order a viewer meets it::

    from core.annotations import (Annotation, AnnotationStore, Classification, classification, read_geojson,
                                  write_geojson, Sidecar, AutoSaver, export_regions, render_overlay)

Objects (``model``) - frozen; edit with ``a.replace(...)``, which keeps the id:
    Annotation(geometry, object_type="annotation" | "detection" | "cell" | "tile", classification=None, id=<uuid4>,
               nucleus=None, score=None, measurements={}, source="user" | "model:<name>" | "ground-truth" |
               "review" | "import", review=None, locked=False, name=None, notes=None, color=None)
    a.class_name, a.display_color (own colour, else class colour), a.bounds
    classification("HSIL") -> Classification(name, color) from the registry (``classes``): Bethesda categories,
        organisms, the synthetic slide classes and QuPath's Region*/Ignore*/Other have fixed colours; any other
        name gets a colour hashed from the name (stable across sessions). classification(None) is None.
    Review(status="accepted" | "rejected" | "reclassified", previous=<class before>, target=<reviewed id>, ...)
    reviewed(a, status, new_class=None) -> a with the decision recorded on it (class changed if reclassified)
    review_decision(target, status, new_class=None) -> a new "review" object that records a decision about a
        model detection without touching it (decisions outlive re-analysis; the sidecar keeps them)

The store (``store``) - one per open slide:
    store = AnnotationStore(annotations=())
    reading: len(store), id in store, store.get(id), store.snapshot() (a list a worker thread may keep),
             store.select(types=, classes=, sources=), store.query((x0, y0, x1, y1), types=, classes=,
             exact=True), store.query_boxes(rect) -> (bounds (N, 4), colours (N, 3)) arrays for drawing
             many objects zoomed out, store.query_geometry(geom, predicate="intersects"),
             store.hit_test(x, y, tolerance) -> best hit first (nearest; smallest containing object on ties),
             store.counts() -> {(object_type, class_name): n}, store.revision
             (``classes=[None]`` selects unclassified objects; ``sources="model"`` any model)
    editing: store.add(objs), store.update(new_versions), store.remove(objs_or_ids), store.clear(),
             each one undo step (``label=`` names it for an Edit menu); ``with store.transaction("Review page"):``
             groups edits; ``undoable=False`` for changes the user did not make (an analysis adding detections);
             store.undo(), store.redo(), store.can_undo, store.undo_label; store.load(objs) replaces all and
             forgets the history. Locked objects may be reclassified or reviewed but not reshaped or deleted
             (``LockedError``) unless ``force=True``.
    events:  unsubscribe = store.subscribe(callback); callback(StoreEvent) after every change, on the changing
             thread: event.added, .removed, .changed ((old, new) pairs), .reason ("edit", "undo", "redo",
             "load"), .label, .revision, .bounds() -> level-0 rectangle to repaint. A Qt view emits a signal
             from the callback and does its work on the GUI thread.
    The spatial index takes one-at-a-time additions without rebuilding (``spatial.ChunkedIndex``): queries and
    hit tests stay fast with 100,000+ objects (see benchmarks/annotations.py).

Files:
    read_geojson(path, offset=slide_or_xy, source="import") -> GeoJSONReport(annotations, warnings, repaired,
        dropped, extra); write_geojson(path, objs, offset=slide_or_xy) -> GeoJSONReport(written, warnings, ...).
        QuPath GeoJSON (FeatureCollection or bare list; measurements as map or legacy list; nucleusGeometry;
        classification name/names, color/colorRGB). ``offset`` is the OpenSlide bounds offset QuPath measures
        from: added on import, subtracted on export. Export repairs invalid geometry and drops empty geometry,
        with warnings. Score, source, review and notes travel in properties.metadata. Malformed files raise
        ``InputError`` naming the file and the line or feature. write_feature_collection(path, features) streams
        ready-made Feature dicts or strings (the synthetic ground truth uses it).
    Sidecar(slide_path, offset=slide).load() / .save(objs): autosave beside the slide as
        ``<slide>.cervixfm.geojson``, or under ``core.paths.data_dir()/annotations/`` when the folder is read-only;
        a damaged sidecar is kept as ``.bak`` and loading starts empty with a warning.
        AutoSaver(store, sidecar).save_if_dirty(): call it from a debounce timer (any thread).
    export_regions(slide, regions, out_dir, objects=store, mpp=0.5 | magnification=20, burn=False) ->
        RegionExport(folder, regions, objects, warnings): one new folder with a crop per region, its overlapping
        objects as GeoJSON in crop pixels, optional overlay images, measurements.csv and manifest.json.
    render_overlay(rgb, objs, origin=(x0, y0), scale=1/downsample, thickness=2, fill_opacity=0) -> rgb copy
        with the objects drawn (the core renderer for exports and reports; the viewer draws with Qt).
"""

from .classes import ClassRegistry, Classification, classification, default_registry, registry
from .export import RegionExport, export_regions, render_overlay, resolve_downsample, to_crop
from .geojson import (GeoJSONReport, annotation_to_feature, bounds_offset, parse_geojson, read_geojson, repair,
                      write_feature_collection, write_geojson)
from .model import OBJECT_TYPES, REVIEW_STATUSES, Annotation, Review, new_id, review_decision, reviewed
from .sidecar import AutoSaver, Sidecar, sidecar_path, slide_fingerprint
from .store import AnnotationStore, LockedError, StoreEvent

__all__ = [
    "OBJECT_TYPES", "REVIEW_STATUSES", "Annotation", "AnnotationStore", "AutoSaver", "ClassRegistry",
    "Classification", "GeoJSONReport", "LockedError", "RegionExport", "Review", "Sidecar", "StoreEvent",
    "annotation_to_feature", "bounds_offset", "classification", "default_registry", "export_regions", "new_id",
    "parse_geojson", "read_geojson", "registry", "render_overlay", "repair", "resolve_downsample",
    "review_decision", "reviewed", "sidecar_path", "slide_fingerprint", "to_crop", "write_feature_collection",
    "write_geojson",
]
