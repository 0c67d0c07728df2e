"""Annotation objects: one immutable record per drawn region, detected cell or reviewed decision.

The spirit is QuPath's object hierarchy (annotations, detections, cells with nuclei, tiles; classification,
measurements, locked flag), plus what an AI-assisted review needs: a score, where the object came from and what a
reviewer decided about it.

Objects are frozen: an edit makes a new object (``a.replace(...)``). That is what lets the store keep an undo stack
of plain (old, new) pairs, lets a worker thread save or export a snapshot while the user keeps editing, and stops
anyone moving a geometry behind the spatial index's back.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from shapely.geometry.base import BaseGeometry

from .classes import Classification, classification as _lookup_class

OBJECT_TYPES = ("annotation", "detection", "cell", "tile")
REVIEW_STATUSES = ("accepted", "rejected", "reclassified")
#: Where an object came from: drawn by a person, written by a model (``model:<name>``), read from ground truth,
#: a reviewer's decision, or imported from a file whose origin is unknown.
SOURCES = ("user", "ground-truth", "review", "import")


def new_id() -> str:
    """A random (version 4) UUID string, made without ``uuid.UUID`` (3x faster; a million cells need a million)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def check_source(source: str) -> str:
    if source in SOURCES or (source.startswith("model:") and len(source) > 6):
        return source
    raise ValueError(f"unknown source {source!r}: use one of {', '.join(SOURCES)} or 'model:<name>'")


@dataclass(frozen=True)
class Review:
    """A reviewer's decision on a (usually model-made) object, as the suspicious-cell gallery records it.

    ``previous`` is the class before a reclassification (or the class accepted / rejected); ``target`` the id of
    the reviewed object when the decision is stored as a separate annotation (see ``review_decision``).
    """

    status: str
    previous: str | None = None
    target: str | None = None
    reviewer: str | None = None
    time: float | None = None  # seconds since the epoch

    def __post_init__(self) -> None:
        if self.status not in REVIEW_STATUSES:
            raise ValueError(f"review status must be one of {', '.join(REVIEW_STATUSES)}, got {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Review":
        t = data.get("time")
        return cls(status=str(data["status"]), previous=_opt_str(data.get("previous")),
                   target=_opt_str(data.get("target")), reviewer=_opt_str(data.get("reviewer")),
                   time=float(t) if t is not None else None)


def _opt_str(v) -> str | None:
    return None if v is None else str(v)


@dataclass(frozen=True, eq=False)
class Annotation:
    """One object on a slide. Geometry and nucleus are shapely objects in level-0 pixels (x right, y down).

    Equality is identity of content: ``a == b`` when every field matches (geometries compared exactly).
    ``measurements`` is read-only; ``replace(measurements=...)`` makes a changed copy.
    """

    geometry: BaseGeometry
    object_type: str = "annotation"
    classification: Classification | None = None
    id: str = field(default_factory=new_id)
    nucleus: BaseGeometry | None = None
    score: float | None = None
    measurements: Mapping[str, float] = field(default_factory=dict)
    source: str = "user"
    review: Review | None = None
    locked: bool = False
    name: str | None = None
    notes: str | None = None
    #: Object colour overriding the class colour (QuPath's per-object ``color``); None uses the class colour.
    color: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.geometry, BaseGeometry):
            raise TypeError(f"geometry must be a shapely geometry, got {type(self.geometry).__name__}")
        if self.object_type not in OBJECT_TYPES:
            raise ValueError(f"object type must be one of {', '.join(OBJECT_TYPES)}, got {self.object_type!r}")
        if self.nucleus is not None and not isinstance(self.nucleus, BaseGeometry):
            raise TypeError("nucleus must be a shapely geometry or None")
        if isinstance(self.classification, str):
            object.__setattr__(self, "classification", _lookup_class(self.classification))
        check_source(self.source)
        if self.score is not None:
            object.__setattr__(self, "score", float(self.score))
        if not isinstance(self.measurements, MappingProxyType):
            object.__setattr__(self, "measurements",
                               MappingProxyType({str(k): float(v) for k, v in self.measurements.items()}))
        if self.color is not None:
            from .classes import as_rgb

            object.__setattr__(self, "color", as_rgb(self.color))

    # ------------------------------------------------------------------------------------------- derived
    @property
    def class_name(self) -> str | None:
        return self.classification.name if self.classification else None

    @property
    def display_color(self) -> tuple[int, int, int]:
        """What a view draws: the object's own colour, else its class colour, else QuPath's unclassified red."""
        if self.color is not None:
            return self.color
        if self.classification is not None:
            return self.classification.color
        return (255, 0, 0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in level-0 pixels."""
        return self.geometry.bounds

    def replace(self, **changes) -> "Annotation":
        """A copy with ``changes`` applied; the id stays (it is the same object, edited)."""
        if "classification" in changes and isinstance(changes["classification"], str):
            changes["classification"] = _lookup_class(changes["classification"])
        return dataclasses.replace(self, **changes)

    def same_shape(self, other: "Annotation") -> bool:
        """Whether the spatial index entry of ``self`` is still right for ``other``."""
        return self.geometry is other.geometry or self.geometry.equals_exact(other.geometry, 0.0)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Annotation):
            return NotImplemented
        return all(_field_equal(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))

    __hash__ = None  # type: ignore[assignment]  # equal content, not identity; keep them out of sets

    def __repr__(self) -> str:
        x0, y0, x1, y1 = self.geometry.bounds if not self.geometry.is_empty else (math.nan,) * 4
        cls = f" {self.class_name!r}" if self.classification else ""
        return (f"<Annotation {self.object_type}{cls} {self.geometry.geom_type} "
                f"[{x0:.0f},{y0:.0f} - {x1:.0f},{y1:.0f}] {self.source} {self.id[:8]}>")


def _field_equal(a, b) -> bool:
    if isinstance(a, BaseGeometry) or isinstance(b, BaseGeometry):
        if a is None or b is None:
            return a is b
        return a.geom_type == b.geom_type and a.equals_exact(b, 0.0)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return dict(a) == dict(b)
    return a == b


# ------------------------------------------------------------------------------------------- review helpers
def reviewed(a: Annotation, status: str, new_class: str | Classification | None = None,
             reviewer: str | None = None) -> Annotation:
    """``a`` with a review decision recorded on the object itself (class changed for ``reclassified``)."""
    previous = a.class_name
    changes: dict[str, Any] = {}
    if status == "reclassified":
        if new_class is None:
            raise ValueError("reclassifying needs the new class")
        changes["classification"] = _lookup_class(new_class)
    elif new_class is not None:
        raise ValueError(f"only 'reclassified' takes a new class, not {status!r}")
    changes["review"] = Review(status, previous=previous, reviewer=reviewer, time=time.time())
    return a.replace(**changes)


def review_decision(target: Annotation, status: str, new_class: str | Classification | None = None,
                    reviewer: str | None = None) -> Annotation:
    """A new object (source ``review``) that records a decision about ``target`` without changing it.

    Model detections are regenerated whenever a slide is re-analysed; decisions must outlive them and are what a
    reviewer's sidecar file keeps. The decision copies the target's outline and type, so it is drawn, exported and
    used as a training label like the cell it judges; its class is the final one (the new class when reclassified).
    """
    r = reviewed(target, status, new_class, reviewer)
    review = dataclasses.replace(r.review, target=target.id)
    return Annotation(geometry=target.geometry, object_type=target.object_type, classification=r.classification,
                      nucleus=target.nucleus, score=target.score, source="review", review=review)
