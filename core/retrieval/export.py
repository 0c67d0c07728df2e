"""Search hits as CSV and JSON files, written atomically, for spreadsheets and other tools."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Sequence

from ..io import atomic_write_text

HIT_COLUMNS = ("query", "rank", "id", "distance", "similarity", "source", "slide", "x", "y", "w", "h", "label",
               "score", "name")


def hits_csv(path: str | os.PathLike, hits_per_query: Sequence[Sequence[dict[str, Any]]],
             query_names: Sequence[str] | None = None) -> None:
    """One row per (query, neighbour)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(HIT_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for q, hits in enumerate(hits_per_query):
        name = query_names[q] if query_names else str(q)
        for hit in hits:
            writer.writerow({**{k: ("" if v is None else v) for k, v in hit.items()}, "query": name})
    atomic_write_text(path, buffer.getvalue())


def write_json(path: str | os.PathLike, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=1, default=_default))


def _default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
