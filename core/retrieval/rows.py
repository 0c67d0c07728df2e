"""What each indexed embedding is: slide, level-0 box, optional label and score, source, image name.

A slide library holds millions of rows but few distinct slides, labels and sources, so the string columns are
stored as category codes (int32 into a small list of values): about 33 bytes a row in all, in a pickle-free
``.npz``. Empty string = no label / no slide / no name; NaN = no score.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError

SOURCES = ("cell", "tile", "atlas")
STRING_COLUMNS = ("slide", "label", "source", "name")
COLUMNS = ("slide", "x", "y", "w", "h", "label", "score", "source", "name")


@dataclasses.dataclass
class Categorical:
    """A string column as int32 codes into ``values`` (values[0] is always "")."""

    codes: np.ndarray
    values: list[str]

    @classmethod
    def encode(cls, strings: Sequence[Any]) -> "Categorical":
        values = [""]
        lookup = {"": 0}
        codes = np.empty(len(strings), np.int32)
        for i, s in enumerate(strings):
            s = "" if s is None or (isinstance(s, float) and math.isnan(s)) else str(s)
            code = lookup.get(s)
            if code is None:
                code = lookup[s] = len(values)
                values.append(s)
            codes[i] = code
        return cls(codes, values)

    def __len__(self) -> int:
        return len(self.codes)

    def decode(self, i: int) -> str:
        return self.values[int(self.codes[i])]

    def take(self, idx: np.ndarray) -> "Categorical":
        return Categorical(self.codes[idx], self.values)

    def mask(self, value: str) -> np.ndarray:
        try:
            return self.codes == self.values.index(value)
        except ValueError:
            return np.zeros(len(self.codes), bool)

    def distinct(self) -> list[str]:
        used = np.unique(self.codes)
        return [self.values[c] for c in used if self.values[c]]


@dataclasses.dataclass
class RowTable:
    """Columnar metadata, one row per embedding. Build with :meth:`from_columns` or :meth:`from_records`."""

    slide: Categorical
    boxes: np.ndarray  # (N, 4) int32 level-0 x, y, w, h (zeros when the row has no position, e.g. atlas crops)
    label: Categorical
    score: np.ndarray  # (N,) float32, NaN = none
    source: Categorical
    name: Categorical

    def __len__(self) -> int:
        return len(self.boxes)

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def empty(cls) -> "RowTable":
        return cls.from_columns(source=[])

    @classmethod
    def from_columns(cls, *, source: Sequence[str] | str, slide: Sequence[str] | str | None = None,
                     boxes: np.ndarray | None = None, label: Sequence[Any] | None = None,
                     score: Sequence[float] | None = None, name: Sequence[str] | None = None,
                     n: int | None = None) -> "RowTable":
        """Columns of equal length; a single string for ``slide``/``source`` applies to every row."""
        lengths = [len(c) for c in (boxes, label, score, name) if c is not None]
        lengths += [len(c) for c in (slide, source) if c is not None and not isinstance(c, str)]
        if n is None:
            if not lengths:
                raise ValueError("RowTable.from_columns needs at least one column with a length, or n")
            n = lengths[0]
        if any(length != n for length in lengths):
            raise InputError(f"Metadata columns have different lengths {sorted(set(lengths))}; each needs one entry "
                             "per embedding.")
        if isinstance(source, str):
            source = [source] * n
        if isinstance(slide, str) or slide is None:
            slide = [slide or ""] * n
        bad = sorted({s for s in source if s not in SOURCES})
        if bad:
            raise InputError(f"Unknown row source(s) {bad}; use one of {', '.join(SOURCES)}.")
        box_arr = np.zeros((n, 4), np.int64) if boxes is None else np.asarray(boxes)
        if box_arr.shape != (n, 4):
            raise InputError(f"Boxes must be (N, 4) level-0 x, y, w, h; got shape {box_arr.shape} for {n} rows.")
        if np.abs(box_arr).max(initial=0) >= 2**31:
            raise InputError("Box coordinates exceed 2^31 px; they must be level-0 pixel coordinates.")
        scores = np.full(n, np.nan, np.float32) if score is None else np.asarray(
            [np.nan if s is None else s for s in score], np.float32)
        return cls(Categorical.encode(slide), np.round(box_arr).astype(np.int32), Categorical.encode(
            label if label is not None else [""] * n), scores, Categorical.encode(source),
            Categorical.encode(name if name is not None else [""] * n))

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> "RowTable":
        """Rows as dicts with keys among ``slide, x, y, w, h, label, score, source, name`` (``source`` required)."""
        records = list(records)
        for r in records:
            unknown = set(r) - set(COLUMNS)
            if unknown:
                raise InputError(f"Unknown metadata field(s) {sorted(unknown)}; known: {', '.join(COLUMNS)}.")
            if "source" not in r:
                raise InputError(f"Every metadata row needs a source ({', '.join(SOURCES)}).")
        boxes = np.array([[r.get(c, 0) or 0 for c in "xywh"] for r in records], np.float64).reshape(-1, 4)
        return cls.from_columns(
            source=[r["source"] for r in records], slide=[r.get("slide") or "" for r in records], boxes=boxes,
            label=[r.get("label") for r in records], score=[r.get("score") for r in records],
            name=[r.get("name") or "" for r in records], n=len(records))

    @staticmethod
    def concat(tables: Sequence["RowTable"]) -> "RowTable":
        if not tables:
            return RowTable.empty()
        if len(tables) == 1:
            return tables[0]
        cats = {}
        for col in STRING_COLUMNS:
            strings: list[str] = []
            for t in tables:
                c = getattr(t, col)
                strings.extend(np.asarray(c.values, dtype=object)[c.codes].tolist())
            cats[col] = Categorical.encode(strings)
        return RowTable(cats["slide"], np.concatenate([t.boxes for t in tables]), cats["label"],
                        np.concatenate([t.score for t in tables]), cats["source"], cats["name"])

    def take(self, idx) -> "RowTable":
        idx = np.asarray(idx, np.int64)
        return RowTable(self.slide.take(idx), self.boxes[idx], self.label.take(idx), self.score[idx],
                        self.source.take(idx), self.name.take(idx))

    # ------------------------------------------------------------------------------------------------ reading
    def record(self, i: int) -> dict[str, Any]:
        x, y, w, h = (int(v) for v in self.boxes[i])
        score = float(self.score[i])
        return {"slide": self.slide.decode(i), "x": x, "y": y, "w": w, "h": h,
                "label": self.label.decode(i) or None, "score": None if math.isnan(score) else score,
                "source": self.source.decode(i), "name": self.name.decode(i) or None}

    # ----------------------------------------------------------------------------------------------- on disk
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (no objects, so no pickles) for ``np.savez``."""
        arrays: dict[str, np.ndarray] = {"boxes": self.boxes, "score": self.score}
        for col in STRING_COLUMNS:
            c = getattr(self, col)
            arrays[f"{col}_codes"] = c.codes
            arrays[f"{col}_values"] = np.asarray(c.values, dtype=str)
        return arrays

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], expected_rows: int) -> "RowTable":
        """The inverse of :meth:`to_arrays`; raises ``ValueError`` when the arrays are inconsistent."""
        cats = {col: Categorical(np.asarray(data[f"{col}_codes"], np.int32), [str(v) for v in data[f"{col}_values"]])
                for col in STRING_COLUMNS}
        table = cls(cats["slide"], np.asarray(data["boxes"], np.int32), cats["label"],
                    np.asarray(data["score"], np.float32), cats["source"], cats["name"])
        if table.boxes.shape != (expected_rows, 4) or len(table.score) != expected_rows:
            raise ValueError(f"{len(table.boxes)} rows where {expected_rows} were expected")
        for col in STRING_COLUMNS:
            c = getattr(table, col)
            if len(c) != expected_rows or (len(c) and (c.codes.min() < 0 or c.codes.max() >= len(c.values))):
                raise ValueError(f"column {col!r} is inconsistent")
        return table
