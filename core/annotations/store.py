"""The annotations of one slide: edits with undo/redo, change events for views, and a spatial index.

``AnnotationStore`` plays napari's layer model: it knows nothing about Qt. A view subscribes a callback and
repaints the region an event covers; the panels re-count classes; the autosaver notes the new revision. Every
edit is one command: a pair of {id: object-or-None} maps (before, after). Adding, removing, editing, a batch of
gallery decisions or a whole transaction are all that one shape, so undo is "apply before" and redo "apply after".

Objects are immutable (see ``model``), so ``snapshot()`` is a cheap list a worker thread can save or export while
the user keeps editing. All methods take one lock; event callbacks run on the thread that made the change, after
the change, inside that lock: a Qt view must only queue a repaint there (emit a signal), never block.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import shapely

from ..errors import InputError
from ..listeners import Listeners
from .model import OBJECT_TYPES, Annotation
from .spatial import ChunkedIndex

Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 in level-0 pixels

_TYPE_CODE = {t: i for i, t in enumerate(OBJECT_TYPES)}
UNCLASSIFIED = None


class LockedError(InputError):
    """An edit would move or delete a locked object."""


@dataclass(frozen=True)
class StoreEvent:
    """What one change did. ``changed`` holds (old, new) pairs; ``reason`` is edit, undo, redo or load."""

    added: tuple[Annotation, ...] = ()
    removed: tuple[Annotation, ...] = ()
    changed: tuple[tuple[Annotation, Annotation], ...] = ()
    reason: str = "edit"
    label: str = ""
    revision: int = 0

    def annotations(self) -> Iterator[Annotation]:
        """Every object the change touched, old and new versions."""
        yield from self.added
        yield from self.removed
        for old, new in self.changed:
            yield old
            yield new

    def bounds(self) -> Rect | None:
        """The level-0 rectangle a view must repaint (and whose cached rasters are stale); None if nothing."""
        boxes = [a.geometry.bounds for a in self.annotations() if not a.geometry.is_empty]
        if not boxes:
            return None
        arr = np.asarray(boxes, np.float64)
        return (float(arr[:, 0].min()), float(arr[:, 1].min()), float(arr[:, 2].max()), float(arr[:, 3].max()))


@dataclass
class _Command:
    label: str
    before: dict[str, Annotation | None] = field(default_factory=dict)
    after: dict[str, Annotation | None] = field(default_factory=dict)

    def record(self, key: str, old: Annotation | None, new: Annotation | None) -> None:
        if key not in self.before:
            self.before[key] = old
        self.after[key] = new

    def is_noop(self) -> bool:
        return all(self.before[k] is self.after[k] for k in self.before)


class AnnotationStore:
    """All objects of one slide, in insertion order.

    Reading: ``len``, iteration, ``in`` (by id), ``get(id)``, ``snapshot()``, ``select(...)``, ``query(rect)``,
    ``query_geometry(geom)``, ``hit_test(x, y, tolerance)``, ``counts()``, ``revision``.
    Editing (each call one undo step, or one per ``transaction``): ``add``, ``update``, ``remove``, ``clear``;
    ``undo``/``redo``; ``load`` replaces everything and forgets the history (opening a file).
    ``undoable=False`` applies a change outside the history (an analysis adding its detections: pressing undo
    should not make them vanish).
    """

    def __init__(self, annotations: Iterable[Annotation] = (), undo_limit: int = 500) -> None:
        self._lock = threading.RLock()
        self._listeners = Listeners()
        self._undo: list[_Command] = []
        self._redo: list[_Command] = []
        self._undo_limit = undo_limit
        self._txn: _Command | None = None
        self._txn_events: list[StoreEvent] = []
        self._revision = 0
        self._reset_storage()
        items = list(annotations)
        if items:
            self._check_new(items)
            self._insert(items)

    # --------------------------------------------------------------------------------------------- storage
    def _reset_storage(self) -> None:
        self._slots: list[Annotation | None] = []
        self._slot_of: dict[str, int] = {}
        self._alive = np.zeros(0, bool)
        self._types = np.zeros(0, np.int8)
        self._classes = np.zeros(0, np.int32)
        self._bounds = np.zeros((0, 4), np.float64)
        self._colors = np.zeros((0, 3), np.uint8)
        self._class_code: dict[str | None, int] = {None: 0}
        self._index = ChunkedIndex()
        self._dead = 0

    def _grow(self, n: int) -> None:
        need = len(self._slots) + n
        if need > len(self._alive):
            cap = max(need, 2 * len(self._alive), 1024)
            for name in ("_alive", "_types", "_classes", "_bounds", "_colors"):
                old = getattr(self, name)
                new = np.zeros((cap,) + old.shape[1:], old.dtype)
                new[:len(old)] = old
                setattr(self, name, new)

    def _code(self, a: Annotation) -> int:
        name = a.class_name
        code = self._class_code.get(name)
        if code is None:
            code = self._class_code[name] = len(self._class_code)
        return code

    def _insert(self, items: list[Annotation]) -> None:
        """Append new slots for ``items`` (ids not present) and index them."""
        self._grow(len(items))
        start = len(self._slots)
        stop = start + len(items)
        self._slots.extend(items)
        for i, a in enumerate(items, start):
            self._slot_of[a.id] = i
        self._alive[start:stop] = True
        self._types[start:stop] = [_TYPE_CODE[a.object_type] for a in items]
        self._classes[start:stop] = [self._code(a) for a in items]
        self._colors[start:stop] = [a.display_color for a in items]
        geoms = np.empty(len(items), dtype=object)
        geoms[:] = [a.geometry for a in items]
        self._bounds[start:stop] = shapely.bounds(geoms)
        if len(items) == 1:
            self._index.insert(start, items[0].geometry)
        else:
            self._index.insert_many(np.arange(start, stop), geoms)

    def _kill(self, key: str) -> Annotation:
        slot = self._slot_of.pop(key)
        old = self._slots[slot]
        self._slots[slot] = None
        self._alive[slot] = False
        self._dead += 1
        return old

    def _set(self, key: str, new: Annotation | None) -> tuple[Annotation | None, Annotation | None]:
        """Make ``key`` hold ``new`` (None deletes); returns (old, new). Reshaped objects get a new slot (drawn
        on top, re-indexed); others keep theirs and the index is untouched."""
        slot = self._slot_of.get(key)
        old = self._slots[slot] if slot is not None else None
        if new is None:
            if old is not None:
                self._kill(key)
            return old, None
        if old is None:
            self._insert([new])
        elif old.same_shape(new):
            self._slots[slot] = new
            self._types[slot] = _TYPE_CODE[new.object_type]
            self._classes[slot] = self._code(new)
            self._colors[slot] = new.display_color
        else:
            self._kill(key)
            self._insert([new])
        return old, new

    def _maybe_compact(self) -> None:
        """Drop dead slots once they outnumber the living: keeps memory and queries proportional to the live set."""
        if self._dead < 1024 or self._dead < len(self._slot_of):
            return
        live = [a for a in self._slots if a is not None]
        codes = self._class_code
        self._reset_storage()
        self._class_code = codes
        if live:
            self._insert(live)

    # --------------------------------------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, Annotation):
            key = key.id
        return key in self._slot_of

    def __iter__(self) -> Iterator[Annotation]:
        return iter(self.snapshot())

    def get(self, key: str) -> Annotation:
        with self._lock:
            slot = self._slot_of.get(key)
            if slot is None:
                raise KeyError(key)
            return self._slots[slot]

    def snapshot(self) -> list[Annotation]:
        """Every object, in insertion order. Safe to hand to another thread (objects are immutable)."""
        with self._lock:
            return [a for a in self._slots if a is not None]

    @property
    def revision(self) -> int:
        """Increases with every change (undo and redo included): an autosaver compares it with the saved one."""
        return self._revision

    def _keep(self, slots: np.ndarray, types, classes) -> np.ndarray:
        """The living ``slots`` of the wanted types and classes. Works on the candidates only, so a query's cost
        follows its result, not the store's size."""
        keep = self._alive[slots]
        if types is not None:
            types = [types] if isinstance(types, str) else list(types)
            unknown = [t for t in types if t not in _TYPE_CODE]
            if unknown:
                raise ValueError(f"unknown object type(s) {unknown}; use {', '.join(OBJECT_TYPES)}")
            keep &= np.isin(self._types[slots], [_TYPE_CODE[t] for t in types])
        if classes is not None:
            classes = [classes] if isinstance(classes, str) else list(classes)
            keep &= np.isin(self._classes[slots], [self._class_code[c] for c in classes if c in self._class_code])
        return keep

    def _filter(self, slots: np.ndarray, types, classes) -> np.ndarray:
        """Sorted (insertion, i.e. drawing, order) living slots. Index keys are unique, so a sort suffices."""
        slots = np.sort(slots)
        return slots[self._keep(slots, types, classes)]

    @staticmethod
    def _by_source(objs: list[Annotation], sources) -> list[Annotation]:
        if sources is None:
            return objs
        sources = {sources} if isinstance(sources, str) else set(sources)
        return [a for a in objs if a.source in sources or ("model" in sources and a.source.startswith("model:"))]

    def _pick(self, slots: np.ndarray, types, classes, sources) -> list[Annotation]:
        items = self._slots
        return self._by_source([items[s] for s in self._filter(slots, types, classes).tolist()], sources)

    def select(self, types=None, classes=None, sources=None) -> list[Annotation]:
        """Objects by type (``"cell"`` or a list), class name (``None`` = unclassified) and source
        (``"model"`` matches every ``model:<name>``), in insertion order."""
        with self._lock:
            return self._pick(np.arange(len(self._slots)), types, classes, sources)

    def query(self, rect: Rect, types=None, classes=None, sources=None, exact: bool = True) -> list[Annotation]:
        """Objects intersecting the level-0 rectangle (x0, y0, x1, y1), in insertion order.

        ``exact=False`` returns objects whose bounding box intersects it (cheaper; fine for deciding what to draw).
        """
        x0, y0, x1, y1 = (float(v) for v in rect)
        with self._lock:
            slots = self._index.query_box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), exact=exact)
            return self._pick(slots, types, classes, sources)

    def query_boxes(self, rect: Rect, types=None, classes=None) -> tuple[np.ndarray, np.ndarray]:
        """(bounds (N, 4) float64 x0, y0, x1, y1; colours (N, 3) uint8) of the objects whose bounding box meets
        ``rect``, in insertion order, without building N Python objects.

        For drawing many objects zoomed out (a cached raster of boxes or dots): 50,000 detections cost about as
        much as a few hundred through ``query``.
        """
        x0, y0, x1, y1 = (float(v) for v in rect)
        with self._lock:
            slots = self._index.query_box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), exact=False)
            slots = self._filter(slots, types, classes)
            return self._bounds[slots], self._colors[slots]  # fancy indexing copies

    def query_geometry(self, geom, types=None, classes=None, sources=None,
                       predicate: str = "intersects") -> list[Annotation]:
        """Objects whose geometry satisfies ``predicate`` (intersects, within, contains, ...) with ``geom``."""
        with self._lock:
            return self._pick(self._index.query(geom, predicate), types, classes, sources)

    def hit_test(self, x: float, y: float, tolerance: float = 0.0, types=None, classes=None,
                 sources=None) -> list[Annotation]:
        """Objects within ``tolerance`` level-0 px of the point, best hit first.

        Best = nearest; among objects that contain the point (distance 0) the smallest, so a click inside a cell
        inside a drawn region picks the cell, and a point annotation is picked within the tolerance.
        A view passes its click tolerance in screen pixels times its downsample.
        """
        with self._lock:
            slots, dist = self._index.within_distance(float(x), float(y), float(tolerance))
            if not len(slots):
                return []
            keep = self._keep(slots, types, classes)
            slots, dist = slots[keep], dist[keep]
            objs = [self._slots[s] for s in slots.tolist()]
            order = sorted(range(len(objs)), key=lambda i: (dist[i], objs[i].geometry.area, -slots[i]))
            return self._by_source([objs[i] for i in order], sources)

    def counts(self, types=None) -> dict[tuple[str, str | None], int]:
        """{(object type, class name): count} of living objects (for a layers panel or a summary)."""
        with self._lock:
            n = len(self._slots)
            mask = self._keep(np.arange(n), types, None)
            names = {code: name for name, code in self._class_code.items()}
            pairs = self._types[:n][mask].astype(np.int64) * (1 << 32) + self._classes[:n][mask]
            values, counts = np.unique(pairs, return_counts=True)
            return {(OBJECT_TYPES[int(v >> 32)], names[int(v & 0xFFFFFFFF)]): int(c)
                    for v, c in zip(values.tolist(), counts.tolist())}

    # ------------------------------------------------------------------------------------------------ events
    def subscribe(self, callback: Callable[[StoreEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` after every change; returns a function that unsubscribes."""
        return self._listeners.subscribe(callback)

    def _emit(self, event: StoreEvent) -> None:
        self._listeners.emit(event)

    # ------------------------------------------------------------------------------------------------- edits
    @staticmethod
    def _items(objs) -> list[Annotation]:
        if isinstance(objs, Annotation):
            return [objs]
        items = list(objs)
        for a in items:
            if not isinstance(a, Annotation):
                raise TypeError(f"expected Annotation objects, got {type(a).__name__}")
        return items

    def _check_new(self, items: list[Annotation]) -> None:
        seen: set[str] = set()
        for a in items:
            if a.id in self._slot_of or a.id in seen:
                raise ValueError(f"an object with id {a.id} is already in the store; use update() to change it")
            seen.add(a.id)

    def add(self, objs: Annotation | Iterable[Annotation], label: str = "Add", undoable: bool = True
            ) -> list[Annotation]:
        """Add new objects (ids must be new). A batch is one undo step and one event."""
        items = self._items(objs)
        with self._lock:
            self._check_new(items)
            if not items:
                return []
            cmd = _Command(label)
            if len(items) > 1:
                self._insert(items)  # bulk: one index chunk instead of one pending entry each
                for a in items:
                    cmd.record(a.id, None, a)
            else:
                self._set(items[0].id, items[0])
                cmd.record(items[0].id, None, items[0])
            self._commit(cmd, undoable, StoreEvent(added=tuple(items)))
            return items

    def update(self, objs: Annotation | Iterable[Annotation], label: str = "Edit", undoable: bool = True,
               force: bool = False) -> None:
        """Replace objects by new versions with the same ids (made with ``a.replace(...)``).

        A locked object may be reclassified, renamed, reviewed or unlocked, but not reshaped, unless ``force``.
        """
        items = self._items(objs)
        with self._lock:
            olds = []
            for a in items:
                slot = self._slot_of.get(a.id)
                if slot is None:
                    raise KeyError(f"no object with id {a.id} in the store; use add() for new objects")
                old = self._slots[slot]
                if old.locked and not force and not old.same_shape(a):
                    raise LockedError(f"{old!r} is locked: unlock it before changing its shape.")
                olds.append(old)
            cmd = _Command(label)
            changed = []
            for old, new in zip(olds, items):
                if old is new:
                    continue
                self._set(new.id, new)
                cmd.record(new.id, old, new)
                changed.append((old, new))
            if changed:
                self._commit(cmd, undoable, StoreEvent(changed=tuple(changed)))
                self._maybe_compact()

    def remove(self, objs, label: str = "Delete", undoable: bool = True, force: bool = False) -> list[Annotation]:
        """Remove objects given as Annotation objects or ids; unknown ids are an error. Locked ones need ``force``."""
        keys = [o.id if isinstance(o, Annotation) else str(o) for o in
                ([objs] if isinstance(objs, (Annotation, str)) else list(objs))]
        with self._lock:
            missing = [k for k in keys if k not in self._slot_of]
            if missing:
                raise KeyError(f"no object with id {missing[0]} in the store")
            olds = [self._slots[self._slot_of[k]] for k in dict.fromkeys(keys)]
            locked = [a for a in olds if a.locked]
            if locked and not force:
                raise LockedError(f"{len(locked)} of the objects to delete are locked ({locked[0]!r}); "
                                  "unlock them first.")
            if not olds:
                return []
            cmd = _Command(label)
            for a in olds:
                self._kill(a.id)
                cmd.record(a.id, a, None)
            self._commit(cmd, undoable, StoreEvent(removed=tuple(olds)))
            self._maybe_compact()
            return olds

    def clear(self, label: str = "Delete all", undoable: bool = True) -> None:
        """Remove everything, locked objects included (a user-confirmed action)."""
        with self._lock:
            if self._slot_of:
                self.remove(list(self._slot_of), label=label, undoable=undoable, force=True)

    def load(self, annotations: Iterable[Annotation]) -> None:
        """Replace the whole content (a file was opened): forgets the undo history; one ``load`` event."""
        items = self._items(annotations)
        with self._lock:
            if self._txn is not None:
                raise RuntimeError("cannot load inside a transaction")
            removed = tuple(self.snapshot())
            codes = self._class_code
            self._reset_storage()
            self._class_code = codes
            try:
                self._check_new(items)
            except ValueError:
                self._insert(list(removed))
                raise
            if items:
                self._insert(items)
            self._undo.clear()
            self._redo.clear()
            self._revision += 1
            self._emit(StoreEvent(added=tuple(items), removed=removed, reason="load", label="Load",
                                  revision=self._revision))

    @contextlib.contextmanager
    def transaction(self, label: str) -> Iterator[None]:
        """Group every edit inside the block into one undo step (e.g. a gallery page of decisions).

        Events are still sent per edit. If the block raises, its edits are rolled back and the error propagates.
        """
        with self._lock:
            if self._txn is not None:  # nested: the outer transaction owns the step
                yield
                return
            self._txn = _Command(label)
            try:
                yield
            except BaseException:
                cmd, self._txn = self._txn, None
                self._apply(cmd.before, "undo", cmd.label)
                raise
            cmd, self._txn = self._txn, None
            if not cmd.is_noop():
                self._push_undo(cmd)

    def _commit(self, cmd: _Command, undoable: bool, event: StoreEvent) -> None:
        self._revision += 1
        if self._txn is not None:
            for k in cmd.before:
                self._txn.record(k, cmd.before[k], cmd.after[k])
        elif undoable:
            self._push_undo(cmd)
        else:
            self._redo.clear()  # the redo steps may refer to states that no longer exist
        self._emit(StoreEvent(event.added, event.removed, event.changed, "edit", cmd.label, self._revision))

    def _push_undo(self, cmd: _Command) -> None:
        self._undo.append(cmd)
        if len(self._undo) > self._undo_limit:
            del self._undo[0]
        self._redo.clear()

    # -------------------------------------------------------------------------------------------- undo/redo
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def undo_label(self) -> str | None:
        """What undo would revert ("Add rectangle"), for an Edit menu."""
        return self._undo[-1].label if self._undo else None

    @property
    def redo_label(self) -> str | None:
        return self._redo[-1].label if self._redo else None

    def undo(self) -> bool:
        with self._lock:
            if self._txn is not None:
                raise RuntimeError("cannot undo inside a transaction")
            if not self._undo:
                return False
            cmd = self._undo.pop()
            self._apply(cmd.before, "undo", cmd.label)
            self._redo.append(cmd)
            return True

    def redo(self) -> bool:
        with self._lock:
            if self._txn is not None:
                raise RuntimeError("cannot redo inside a transaction")
            if not self._redo:
                return False
            cmd = self._redo.pop()
            self._apply(cmd.after, "redo", cmd.label)
            self._undo.append(cmd)
            return True

    def _apply(self, state: Mapping[str, Annotation | None], reason: str, label: str) -> None:
        """Make each id hold its object in ``state`` (None = absent). Tolerant of objects changed outside the
        history since (``undoable=False``): a missing object is simply restored, an extra one removed."""
        added, removed, changed = [], [], []
        for key, target in state.items():
            if key not in self._slot_of:
                if target is not None:
                    added.append(target)  # inserted together below: one index chunk, not one entry each
                continue
            old, new = self._set(key, target)
            if new is None:
                removed.append(old)
            elif old is not new:
                changed.append((old, new))
        if added:
            self._insert(added)
        if not (added or removed or changed):
            return
        self._revision += 1
        self._emit(StoreEvent(tuple(added), tuple(removed), tuple(changed), reason, label, self._revision))
        self._maybe_compact()
