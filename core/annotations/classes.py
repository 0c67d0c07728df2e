"""Classifications (name + colour) and the registry that gives every class name one stable colour.

A reviewer, a model and a QuPath user must see the same class in the same colour in every session, so defaults are
fixed tables (Bethesda categories, organisms, the synthetic slide classes, QuPath's special classes) and an unknown
name gets a colour derived from a hash of the name, never from the order classes happen to appear in.
"""

from __future__ import annotations

import colorsys
import hashlib
import threading
from dataclasses import dataclass

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Classification:
    """A class as QuPath writes it: ``{"name": ..., "color": [r, g, b]}``. Equal names mean the same class."""

    name: str
    color: RGB

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("a classification needs a non-empty name")
        object.__setattr__(self, "color", as_rgb(self.color))


# The Bethesda System categories (squamous, glandular) and the organisms / other findings a report lists.
BETHESDA: tuple[tuple[str, RGB], ...] = (
    ("NILM", (40, 160, 80)),
    ("ASC-US", (235, 205, 40)),
    ("ASC-H", (240, 120, 40)),
    ("LSIL", (250, 165, 20)),
    ("HSIL", (215, 30, 30)),
    ("SCC", (130, 0, 40)),
    ("AGC", (60, 120, 230)),
    ("AIS", (30, 60, 190)),
    ("Adenocarcinoma", (95, 20, 160)),
)
ORGANISMS: tuple[tuple[str, RGB], ...] = (
    ("Trichomonas", (0, 175, 175)),
    ("Candida", (200, 120, 220)),
    ("Shift in flora", (150, 150, 60)),
    ("Herpes simplex", (230, 80, 160)),
    ("Actinomyces", (125, 85, 45)),
)
# QuPath's special classes: "Region*" marks areas to analyse, "Ignore*" areas to leave out.
SPECIAL: tuple[tuple[str, RGB], ...] = (
    ("Region*", (0, 0, 180)),
    ("Ignore*", (180, 180, 180)),
    ("Other", (255, 200, 0)),
)


def _synthetic() -> tuple[tuple[str, RGB], ...]:
    from ..synthetic.classes import CLASSES

    return tuple((c.name, tuple(c.color)) for c in CLASSES)


def as_rgb(color) -> RGB:
    """(r, g, b) ints in 0..255 from a sequence, or from a packed (possibly signed, Java ARGB) integer."""
    if isinstance(color, bool):
        raise ValueError(f"not a colour: {color!r}")
    if isinstance(color, int):
        c = color & 0xFFFFFF
        return (c >> 16) & 255, (c >> 8) & 255, c & 255
    try:
        r, g, b = (int(round(float(v))) for v in color)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not an RGB colour: {color!r}") from exc
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"RGB values must be 0..255, got {color!r}")
    return r, g, b


def hashed_color(name: str) -> RGB:
    """A saturated colour that depends only on ``name`` (same in every session and on every machine)."""
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    sat = 0.55 + 0.35 * digest[2] / 255.0
    val = 0.75 + 0.2 * digest[3] / 255.0
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


class ClassRegistry:
    """Name -> Classification. ``get`` never fails: an unknown name is registered with its hashed colour.

    ``set_color`` lets a user recolour a class for this registry (the viewer's layers panel); the defaults are
    untouched. Thread-safe, so importers on worker threads can share the default registry.
    """

    def __init__(self, defaults: tuple[tuple[str, RGB], ...] = ()) -> None:
        self._lock = threading.Lock()
        self._classes: dict[str, Classification] = {}
        for name, color in defaults:
            self._classes.setdefault(name, Classification(name, color))

    def get(self, name: str, color=None) -> Classification:
        """The registered class; a new name is registered with ``color`` if given, else its hashed colour.

        A ``color`` given for an already known name (as read from a file) does not override the registry: the same
        class keeps one colour on screen. Use ``set_color`` for that.
        """
        with self._lock:
            known = self._classes.get(name)
            if known is None:
                known = Classification(name, color if color is not None else hashed_color(name))
                self._classes[name] = known
            return known

    def set_color(self, name: str, color) -> Classification:
        with self._lock:
            cls = Classification(name, color)
            self._classes[name] = cls
            return cls

    def names(self) -> list[str]:
        with self._lock:
            return list(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __len__(self) -> int:
        return len(self._classes)


def default_registry() -> ClassRegistry:
    """A fresh registry with every default class (Bethesda first, then organisms, synthetic, QuPath special)."""
    return ClassRegistry(BETHESDA + ORGANISMS + _synthetic() + SPECIAL)


_DEFAULT: ClassRegistry | None = None
_DEFAULT_LOCK = threading.Lock()


def registry() -> ClassRegistry:
    """The process-wide registry used when no other is given."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = default_registry()
        return _DEFAULT


def classification(name: str | Classification | None, color=None) -> Classification | None:
    """Shorthand: ``classification("HSIL")`` is the registered HSIL class; ``None`` stays unclassified."""
    if name is None or isinstance(name, Classification):
        return name
    return registry().get(name, color)
