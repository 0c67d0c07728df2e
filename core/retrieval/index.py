"""A persistent index of cell/tile embeddings with metadata: add, remove a slide, search, reopen.

Search follows the published retrieval protocol: stored embeddings and queries are centred on the mean of the
stored embeddings (the key set) and L2-normalised; neighbours are ranked by squared L2 distance (``2 - 2 cos``).

Two regimes (see :mod:`core.retrieval.ann` for the measurements behind them):

- below ``exact_limit`` entries (default :data:`~core.retrieval.ann.EXACT_LIMIT`, 50k): exact search with faiss
  ``IndexFlatL2`` through :mod:`core.retrieval.protocol`, identical to the published evaluation bit for bit;
- above it: an IVF-PQ fast-scan index proposes candidates, which are re-ranked exactly.

Mean-centring policy. The key-set mean changes with every add and removal. The raw embeddings are stored, never
centred copies, together with a float64 running sum, so the current mean is always known exactly:

- exact regime: the mean is recomputed from the stored vectors whenever they change (as the protocol does);
- approximate regime: the IVF-PQ index keeps the mean it was trained with (new entries are encoded with that mean,
  so the index stays self-consistent), while the exact re-rank of its candidates always uses the current mean. The
  index is retrained at :meth:`CellIndex.save` when the mean has drifted by more than ``DRIFT_LIMIT`` (10 %) of the
  data's RMS spread, when the entry count has doubled or halved since training, or on :meth:`CellIndex.rebuild`.
  A search never retrains (it would stall a viewer for minutes); between saves new entries are already searchable,
  encoded with the old mean.

Raw vectors are stored as float32 by default, which reproduces the published numbers exactly. ``dtype="float16"``
halves disk and page-cache use (2 KB instead of 4 KB per 1024-d vector) at a measured recall@10 of 0.9993 against
float32 exact search (200k clustered 1024-d vectors, ``benchmarks/retrieval.py``); use it for very large slide
libraries, not for atlases whose numbers are compared with the paper.

Writes are staged in memory and committed by :meth:`CellIndex.save` (see :mod:`core.retrieval.storage`); one
process writes an index at a time.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .. import __version__
from ..errors import CervixFMError, InputError
from . import storage
from .ann import (CALIBRATION_QUERIES, DEFAULT_CANDIDATES, EXACT_LIMIT, AnnIndex, AnnSettings, calibrate,
                  choose_settings, needs_rebuild, training_size)
from .identity import check_same_backbone, describe
from .protocol import centre_and_normalise, flat_index, key_mean, search_flat
from .rows import RowTable

DTYPES = ("float32", "float16")
KINDS = ("cells", "slides", "atlas")
CHUNK_ROWS = 32_768  # rows normalised at a time: 128 MB of float32 at 1024-d


@dataclasses.dataclass
class _Segment:
    vectors: np.ndarray  # (n, D) raw embeddings in the index dtype; memory-mapped once committed
    ids: np.ndarray  # (n,) int64, ascending
    rows: RowTable
    entry: dict[str, Any] | None = None  # manifest entry once committed; None = in memory only


@dataclasses.dataclass
class SearchResult:
    """Neighbours of each query, nearest first: ``ids`` (Q, k) and squared L2 ``distances`` (Q, k) between the
    centred, normalised embeddings (0 = same direction, 2 = orthogonal, 4 = opposite)."""

    ids: np.ndarray
    distances: np.ndarray
    index: "CellIndex"

    @property
    def similarities(self) -> np.ndarray:
        """Cosine similarity of the centred embeddings: ``1 - distance / 2``."""
        return 1.0 - self.distances / 2.0

    def __len__(self) -> int:
        return len(self.ids)

    def records(self, query: int = 0) -> list[dict[str, Any]]:
        """One dict per neighbour: rank, id, distance, similarity and the row's metadata."""
        out = []
        for rank, (i, d) in enumerate(zip(self.ids[query].tolist(), self.distances[query].tolist()), start=1):
            out.append({"rank": rank, "id": int(i), "distance": float(d), "similarity": 1.0 - float(d) / 2.0,
                        **self.index.row(int(i))})
        return out

    def labels(self) -> np.ndarray:
        """(Q, k) label strings of the neighbours ('' where a row has none)."""
        return self.index.labels_of(self.ids)


class CellIndex:
    """Open with :meth:`open`, make with :meth:`create`; ``add``/``remove_slide`` then ``save``."""

    def __init__(self, folder: Path, meta: dict[str, Any], segments: list[_Segment], ann: AnnIndex | None,
                 ann_entry: dict[str, Any] | None):
        self.folder = Path(folder)
        self._meta = meta
        self._segments = segments
        self._ann = ann
        self._ann_entry = ann_entry  # committed file entry of the current ann (None = needs writing / no ann)
        self._key_sum = np.asarray(meta["key_sum"], np.float64)
        self._key_sqsum = float(meta["key_sqsum"])
        self._exact_cache: tuple[Any, np.ndarray, np.ndarray] | None = None
        self._slide_cache: tuple[str, Any, np.ndarray, np.ndarray] | None = None
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None
        self._dirty = False

    # ------------------------------------------------------------------------------------------- make / open
    @classmethod
    def create(cls, folder: str | Path, dim: int, *, backbone: Mapping[str, Any] | None = None, kind: str = "cells",
               tile: Mapping[str, Any] | None = None, classes: Sequence[str] | None = None,
               info: Mapping[str, Any] | None = None, dtype: str = "float32", exact_limit: int = EXACT_LIMIT,
               overwrite: bool = False) -> "CellIndex":
        """A new, empty index, committed to ``folder`` at once so it can be reopened.

        ``backbone``: identity of the model whose embeddings go in (:mod:`core.retrieval.identity`); queries from
        another backbone are refused. ``tile``: ``{"size": px, "mpp": µm/px}`` at which slide crops are embedded.
        ``classes``: class names of an atlas. ``info``: free JSON metadata (e.g. an atlas's image folder).
        """
        if dtype not in DTYPES:
            raise CervixFMError(f"Index dtype must be one of {', '.join(DTYPES)}, not {dtype!r}.")
        if kind not in KINDS:
            raise CervixFMError(f"Index kind must be one of {', '.join(KINDS)}, not {kind!r}.")
        if int(dim) < 1:
            raise CervixFMError(f"Embedding size must be positive, not {dim}.")
        if int(exact_limit) < 1:
            raise CervixFMError(f"exact_limit must be positive, not {exact_limit}.")
        folder = Path(folder)
        storage.prepare_folder(folder, overwrite)
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        meta = {
            "format": storage.FORMAT, "version": storage.VERSION, "kind": kind, "dim": int(dim), "dtype": dtype,
            "count": 0, "backbone": dict(backbone) if backbone else None, "tile": dict(tile) if tile else None,
            "classes": list(classes) if classes is not None else None, "info": dict(info or {}),
            "exact_limit": int(exact_limit), "next_id": 0, "next_segment": 1, "generation": 0,
            "key_sum": [0.0] * int(dim), "key_sqsum": 0.0, "created": now, "updated": now,
            "software": f"cervixfm {__version__}", "segments": [], "ann": None,
        }
        index = cls(folder, meta, [], None, None)
        index._dirty = True
        index.save()
        return index

    @classmethod
    def open(cls, folder: str | Path, verify: bool = False) -> "CellIndex":
        """Reopen a saved index. Files are checked against the manifest (size always; SHA-256 for files up to
        256 MB, or all of them with ``verify``); a damaged file raises :class:`InputError` naming it."""
        folder = Path(folder)
        meta = storage.read_manifest(folder)
        dim, dtype = int(meta["dim"]), meta.get("dtype", "float32")
        if dtype not in DTYPES:
            raise InputError(f"Index manifest {folder / storage.MANIFEST} names an unknown dtype {dtype!r}.")
        segments = []
        for entry in meta["segments"]:
            n = int(entry["rows"])
            vectors = storage.load_vectors(folder, entry["vectors"], n, dim, dtype, verify)
            arrays = storage.load_npz(folder, entry["rows_file"], verify)
            rows_path = folder / entry["rows_file"]["file"]
            try:
                ids = np.asarray(arrays.pop("ids"), np.int64)
                rows = RowTable.from_arrays(arrays, n)
            except (KeyError, ValueError) as exc:
                raise InputError(f"Index file {rows_path} is damaged ({exc}). Rebuild the index.") from exc
            if ids.shape != (n,) or (n > 1 and np.any(np.diff(ids) <= 0)):
                raise InputError(f"Index file {rows_path} is damaged (entry ids out of order). Rebuild the index.")
            segments.append(_Segment(vectors, ids, rows, entry))
        ann = None
        ann_meta = meta.get("ann")
        if ann_meta:
            path = storage.check_file(folder, ann_meta["file"], True)
            ann = AnnIndex.from_bytes(path.read_bytes(), AnnSettings.from_dict(ann_meta["settings"]),
                                      np.asarray(ann_meta["mean"], np.float32), ann_meta["built_count"],
                                      source=f"Index file {path}")
            if len(ann) != int(meta["count"]) or ann.index.d != dim:
                raise InputError(f"Index file {path} does not match its manifest ({len(ann)} entries of "
                                 f"{ann.index.d}-d instead of {meta['count']} of {dim}-d). Run `cervixfm index "
                                 "rebuild`.")
        return cls(folder, meta, segments, ann, ann_meta["file"] if ann_meta else None)

    # ------------------------------------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return int(self._meta["dim"])

    @property
    def dtype(self) -> str:
        return self._meta["dtype"]

    @property
    def kind(self) -> str:
        return self._meta["kind"]

    @property
    def backbone(self) -> dict[str, Any] | None:
        return self._meta["backbone"]

    @property
    def tile(self) -> dict[str, Any] | None:
        return self._meta["tile"]

    @property
    def classes(self) -> list[str] | None:
        return self._meta["classes"]

    @property
    def info(self) -> dict[str, Any]:
        return self._meta["info"]

    @property
    def exact_limit(self) -> int:
        return int(self._meta["exact_limit"])

    @property
    def mode(self) -> str:
        """``exact`` or ``approximate`` (what a search would use now)."""
        return "exact" if len(self) < self.exact_limit else "approximate"

    @property
    def ann_settings(self) -> AnnSettings | None:
        return self._ann.settings if self._ann is not None else None

    @property
    def name(self) -> str:
        return f"Index {self.folder}"

    def __len__(self) -> int:
        return int(sum(len(s.ids) for s in self._segments))

    def set_backbone(self, identity: Mapping[str, Any]) -> None:
        """Record the backbone of an index made without one (the first slide added names it)."""
        if self.backbone:
            check_same_backbone(self.backbone, identity, self.name, "the new embeddings")
        else:
            self._meta["backbone"] = dict(identity)
            self._dirty = True

    def set_tile(self, tile: Mapping[str, Any]) -> None:
        if self.tile and dict(self.tile) != dict(tile):
            raise CervixFMError(f"{self.name} holds tiles of {self.tile['size']} px at {self.tile['mpp']} µm/px; the "
                                f"new ones are {tile['size']} px at {tile['mpp']} µm/px. Tiles of different sizes do "
                                "not compare; analyse the slide with the same tile settings or use another index.")
        if not self.tile:
            self._meta["tile"] = dict(tile)
            self._dirty = True

    def slides(self) -> dict[str, int]:
        """Entries per slide (rows without a slide, e.g. atlas crops, are not listed)."""
        counts: dict[str, int] = {}
        for seg in self._segments:
            codes, n = np.unique(seg.rows.slide.codes, return_counts=True)
            for c, k in zip(codes.tolist(), n.tolist()):
                name = seg.rows.slide.values[c]
                if name:
                    counts[name] = counts.get(name, 0) + k
        return counts

    def label_counts(self) -> dict[str, int]:
        """Entries per label (unlabelled entries are not counted)."""
        counts: dict[str, int] = {}
        for seg in self._segments:
            codes, n = np.unique(seg.rows.label.codes, return_counts=True)
            for c, k in zip(codes.tolist(), n.tolist()):
                label = seg.rows.label.values[c]
                if label:
                    counts[label] = counts.get(label, 0) + k
        return counts

    def summary(self) -> dict[str, Any]:
        label_counts = self.label_counts()
        ann = self._ann.settings.to_dict() if self._ann is not None else None
        return {"folder": str(self.folder), "kind": self.kind, "entries": len(self), "dim": self.dim,
                "dtype": self.dtype, "mode": self.mode, "exact_limit": self.exact_limit, "backbone": self.backbone,
                "tile": self.tile, "classes": self.classes, "slides": len(self.slides()), "labels": label_counts,
                "segments": len(self._segments), "approximate_index": ann, "updated": self._meta["updated"]}

    # --------------------------------------------------------------------------------------------- changing
    def add(self, vectors: np.ndarray, rows: RowTable | Sequence[Mapping[str, Any]], *,
            backbone: Mapping[str, Any] | None = None) -> np.ndarray:
        """Add embeddings (N, D) with one metadata row each; returns their ids. Staged until :meth:`save`.

        ``rows`` is a :class:`RowTable` or a list of dicts (``slide, x, y, w, h, label, score, source, name``).
        ``backbone``: identity of the model that made ``vectors``, checked against the index's.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise InputError(f"Embeddings must be a (N, D) array, got shape {vectors.shape}.")
        self.check_dim(vectors.shape[1], "the new embeddings")
        if backbone is not None:
            check_same_backbone(self.backbone, backbone, self.name, "the new embeddings")
        table = rows if isinstance(rows, RowTable) else RowTable.from_records(rows)
        if len(table) != len(vectors):
            raise InputError(f"{len(vectors)} embeddings but {len(table)} metadata rows; give one row per embedding.")
        if not len(vectors):
            return np.zeros(0, np.int64)
        stored = np.empty(vectors.shape, self.dtype)
        key_sum, key_sqsum = np.zeros(self.dim, np.float64), 0.0
        for start, stop in _chunks(len(vectors)):
            chunk = np.asarray(vectors[start:stop], np.float32)
            if not np.isfinite(chunk).all():
                raise InputError("Embeddings contain NaN or infinite values; none were added.")
            stored[start:stop] = chunk
            if self.dtype == "float16" and not np.isfinite(stored[start:stop]).all():
                raise InputError("Embeddings exceed the float16 range (±65504); none were added. Use a float32 index.")
            exact = stored[start:stop].astype(np.float64)  # the stored (possibly float16) values define the mean
            key_sum += exact.sum(axis=0)
            key_sqsum += float(np.einsum("ij,ij->", exact, exact))
        self._key_sum += key_sum
        self._key_sqsum += key_sqsum
        first = int(self._meta["next_id"])
        ids = np.arange(first, first + len(stored), dtype=np.int64)
        self._meta["next_id"] = first + len(stored)
        self._segments.append(_Segment(stored, ids, table))
        if self._ann is not None:
            for start, stop in _chunks(len(stored)):
                self._ann.add(centre_and_normalise(stored[start:stop], self._ann.mean), ids[start:stop])
            self._ann_entry = None
        self._changed()
        return ids

    def remove_slide(self, slide: str) -> int:
        """Remove every entry of ``slide`` (its recorded path, or a unique file name or stem); returns how many."""
        name = self.resolve_slide(slide)
        removed_ids = []
        kept_segments = []
        for seg in self._segments:
            mask = seg.rows.slide.mask(name)
            if not mask.any():
                kept_segments.append(seg)
                continue
            gone = np.flatnonzero(mask)
            removed_ids.append(seg.ids[gone])
            for start, stop in _chunks(len(gone)):
                exact = np.asarray(seg.vectors[gone[start:stop]], np.float64)
                self._key_sum -= exact.sum(axis=0)
                self._key_sqsum -= float(np.einsum("ij,ij->", exact, exact))
            keep = np.flatnonzero(~mask)
            if len(keep):
                kept_segments.append(_Segment(np.asarray(seg.vectors[keep]), seg.ids[keep], seg.rows.take(keep)))
        self._segments = kept_segments
        ids = np.concatenate(removed_ids)
        if self._ann is not None:
            self._ann.remove(ids)
            self._ann_entry = None
        if not self._segments:
            self._key_sum[:] = 0.0
            self._key_sqsum = 0.0
        self._changed()
        return int(len(ids))

    def resolve_slide(self, slide: str) -> str:
        known = self.slides()
        if slide in known:
            return slide
        matches = [s for s in known if Path(s).name == slide or Path(s).stem == slide
                   or str(Path(s).resolve()) == str(Path(slide).resolve())]
        if len(matches) == 1:
            return matches[0]
        listing = ", ".join(sorted(known)[:10]) + (" …" if len(known) > 10 else "")
        if not matches:
            raise InputError(f"{self.name} has no entries of slide {slide!r}. Slides in it: {listing or 'none'}.")
        raise InputError(f"Slide {slide!r} matches several slides in {self.folder}: {', '.join(matches)}. Give the "
                         "full path.")

    def rebuild(self) -> None:
        """Retrain the approximate index on the current entries now (no-op in the exact regime)."""
        self._changed()
        key_sum = np.zeros(self.dim, np.float64)
        key_sqsum = 0.0
        for _, chunk in self.iter_vectors():  # recompute the running sums: add/remove cycles accumulate rounding
            exact = chunk.astype(np.float64)
            key_sum += exact.sum(axis=0)
            key_sqsum += float(np.einsum("ij,ij->", exact, exact))
        self._key_sum, self._key_sqsum = key_sum, key_sqsum
        if len(self) >= self.exact_limit:
            self._build_ann()
        elif self._ann is not None:
            self._ann, self._ann_entry = None, None
        self._dirty = True

    def save(self) -> None:
        """Commit staged changes: new files first, then the manifest, then removal of replaced files."""
        self._ensure_ann()
        if not self._dirty:
            return
        meta = self._meta
        meta["generation"] = int(meta["generation"]) + 1
        for seg in self._segments:
            if seg.entry is None:
                stem = f"seg-{int(meta['next_segment']):06d}"
                meta["next_segment"] = int(meta["next_segment"]) + 1
                vectors = storage.write_array(self.folder / f"{stem}.vectors.npy", seg.vectors)
                rows = storage.write_npz(self.folder / f"{stem}.rows.npz", {"ids": seg.ids, **seg.rows.to_arrays()})
                seg.entry = {"name": stem, "rows": int(len(seg.ids)), "vectors": vectors, "rows_file": rows}
                seg.vectors = np.load(self.folder / vectors["file"], mmap_mode="r")
        if self._ann is not None and self._ann_entry is None:
            self._ann_entry = storage.write_bytes(self.folder / f"ann-{meta['generation']:06d}.faiss",
                                                  self._ann.to_bytes())
        meta["segments"] = [s.entry for s in self._segments]
        meta["count"] = len(self)
        meta["key_sum"] = self._key_sum.tolist()
        meta["key_sqsum"] = self._key_sqsum
        meta["ann"] = None if self._ann is None else {
            "file": self._ann_entry, "settings": self._ann.settings.to_dict(), "mean": self._ann.mean.ravel().tolist(),
            "built_count": self._ann.built_count}
        meta["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        meta["software"] = f"cervixfm {__version__}"
        storage.write_manifest(self.folder, meta)
        storage.remove_unreferenced(self.folder, meta)
        self._dirty = False

    def verify(self) -> None:
        """Check every committed file against its SHA-256 (reads everything)."""
        CellIndex.open(self.folder, verify=True)

    # ---------------------------------------------------------------------------------------------- reading
    def current_mean(self) -> np.ndarray:
        """(1, D) float32 mean of the stored embeddings (from the running float64 sum)."""
        n = len(self)
        return (self._key_sum / max(n, 1)).astype(np.float32).reshape(1, -1)

    def rms_radius(self) -> float:
        """Root-mean-square distance of the stored embeddings from their mean: the scale drift is judged on."""
        n = len(self)
        if not n:
            return 0.0
        mean = self._key_sum / n
        return float(np.sqrt(max(self._key_sqsum / n - float(mean @ mean), 0.0)))

    def row(self, entry_id: int) -> dict[str, Any]:
        seg, local = self._locate(np.asarray([entry_id]))
        return self._segments[int(seg[0])].rows.record(int(local[0]))

    def labels_of(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        out = np.empty(ids.shape, dtype=object)
        flat = ids.reshape(-1)
        segs, local = self._locate(flat)
        res = out.reshape(-1)
        for j, (s, i) in enumerate(zip(segs.tolist(), local.tolist())):
            res[j] = self._segments[s].rows.label.decode(i)
        return out

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Raw stored embeddings (float32) of ``ids``, in that order."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        out = np.empty((len(ids), self.dim), np.float32)
        segs, local = self._locate(ids)
        for s in np.unique(segs).tolist():
            where = np.flatnonzero(segs == s)
            out[where] = self._segments[s].vectors[local[where]]
        return out

    def iter_vectors(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, raw float32 vectors) in chunks, in id order."""
        for seg in self._segments:
            for start, stop in _chunks(len(seg.ids)):
                yield seg.ids[start:stop], np.asarray(seg.vectors[start:stop], np.float32)

    # -------------------------------------------------------------------------------------------- searching
    def search(self, queries: np.ndarray, k: int = 10, *, backbone: Mapping[str, Any] | None = None,
               slide: str | None = None) -> SearchResult:
        """The ``k`` nearest entries of each query embedding (D,) or (Q, D), nearest first.

        ``slide`` restricts the hits to one slide of a library (its path, or a unique file name or stem): an exact
        search over that slide's entries, still centred on the mean of the whole index (the key set).
        """
        q = np.asarray(queries, np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2:
            raise InputError(f"Query embeddings must be (D,) or (Q, D), got shape {q.shape}.")
        self.check_dim(q.shape[1], "the query")
        if backbone is not None:
            check_same_backbone(self.backbone, backbone, self.name)
        if not np.isfinite(q).all():
            raise InputError("The query embedding contains NaN or infinite values.")
        if len(self) == 0:
            raise InputError(f"{self.name} is empty: add slides or images before searching.")
        if int(k) < 1:
            raise CervixFMError(f"k must be at least 1, not {k}.")
        if slide is not None:
            flat, mean, ids = self._slide_flat(self.resolve_slide(slide))
            distances, positions = search_flat(flat, centre_and_normalise(q, mean), min(int(k), len(ids)))
            return SearchResult(ids[positions], distances, self)
        k = min(int(k), len(self))
        if self.mode == "exact":
            flat, mean, all_ids = self._exact()
            distances, positions = search_flat(flat, centre_and_normalise(q, mean), k)
            return SearchResult(all_ids[positions], distances, self)
        if self._ann is None:  # crossed the exact limit since the last save
            self._build_ann()
        ids, distances = self._search_ann(q, k)
        return SearchResult(ids, distances, self)

    def search_images(self, images: Sequence[np.ndarray], embedder, k: int = 10, slide: str | None = None
                      ) -> SearchResult:
        """Embed RGB crops with ``embedder`` (:class:`core.retrieval.embedder.ImageEmbedder`) and search."""
        check_same_backbone(self.backbone, embedder.identity, self.name)
        return self.search(embedder.embed(list(images)), k, slide=slide)

    # ----------------------------------------------------------------------------------------------- inside
    def check_dim(self, dim: int, what: str) -> None:
        """Refuse embeddings of another size, naming the index's backbone."""
        if dim != self.dim:
            raise InputError(f"{self.name} holds {self.dim}-d embeddings from {describe(self.backbone)}, but "
                             f"{what} is {dim}-d: it was embedded with another backbone or feature mode. Use the "
                             "backbone the index was built with.")

    def _changed(self) -> None:
        self._exact_cache = None
        self._slide_cache = None
        self._lookup = None
        self._dirty = True

    def _ids_and_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        if self._lookup is None:
            ids = np.concatenate([s.ids for s in self._segments]) if self._segments else np.zeros(0, np.int64)
            offsets = np.cumsum([0] + [len(s.ids) for s in self._segments])
            self._lookup = (ids, offsets)
        return self._lookup

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        all_ids, offsets = self._ids_and_offsets()
        pos = np.searchsorted(all_ids, ids)
        if np.any(pos >= len(all_ids)) or np.any(all_ids[np.minimum(pos, len(all_ids) - 1)] != ids):
            raise KeyError(f"unknown entry id(s) in {self.folder}")
        seg = np.searchsorted(offsets, pos, side="right") - 1
        return seg, pos - offsets[seg]

    def _all_vectors(self) -> np.ndarray:
        if not self._segments:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([np.asarray(s.vectors, np.float32) for s in self._segments])

    def _exact(self) -> tuple[Any, np.ndarray, np.ndarray]:
        """Faiss flat index over the stored vectors prepared as the published protocol does, its mean, and the id
        of each position."""
        if self._exact_cache is None:
            keys = self._all_vectors()
            mean = key_mean(keys)
            self._exact_cache = (flat_index(centre_and_normalise(keys, mean)), mean, self._ids_and_offsets()[0])
        return self._exact_cache

    def _slide_flat(self, slide: str) -> tuple[Any, np.ndarray, np.ndarray]:
        """Exact index over one slide's entries (kept for the next query of the same slide)."""
        cached = self._slide_cache
        if cached is None or cached[0] != slide:
            ids = np.concatenate([seg.ids[seg.rows.slide.mask(slide)] for seg in self._segments])
            mean = self._exact()[1] if self.mode == "exact" else self.current_mean()
            cached = self._slide_cache = (slide, flat_index(centre_and_normalise(self.vectors(ids), mean)), mean, ids)
        return cached[1], cached[2], cached[3]

    def _ensure_ann(self) -> None:
        if len(self) < self.exact_limit:
            if self._ann is not None:
                self._ann, self._ann_entry = None, None
                self._dirty = True
            return
        if self._ann is None or needs_rebuild(self._ann, len(self), self.current_mean(), self.rms_radius()):
            self._build_ann()

    def _build_ann(self) -> None:
        n = len(self)
        settings = choose_settings(n, self.dim)
        mean = self.current_mean()
        rng = np.random.default_rng(0)
        all_ids = self._ids_and_offsets()[0]
        sample_ids = np.sort(rng.choice(all_ids, training_size(settings, n), replace=False))
        ann = AnnIndex.train(centre_and_normalise(self.vectors(sample_ids), mean), settings, mean, n)
        query_ids = np.sort(rng.choice(all_ids, min(CALIBRATION_QUERIES, n), replace=False))
        queries = self.vectors(query_ids)
        qn = centre_and_normalise(queries, mean)
        best_sim = np.full((len(qn), 11), -np.inf, np.float32)
        best_ids = np.full((len(qn), 11), -1, np.int64)
        for ids, chunk in self.iter_vectors():
            kn = centre_and_normalise(chunk, mean)
            ann.add(kn, ids)
            sims = qn @ kn.T
            top = min(11, sims.shape[1])
            part = np.argpartition(-sims, top - 1, axis=1)[:, :top]
            merged_sim = np.concatenate([best_sim, np.take_along_axis(sims, part, 1)], axis=1)
            merged_ids = np.concatenate([best_ids, ids[part]], axis=1)
            order = np.argsort(-merged_sim, axis=1, kind="stable")[:, :11]
            best_sim = np.take_along_axis(merged_sim, order, 1)
            best_ids = np.take_along_axis(merged_ids, order, 1)
        self._ann, self._ann_entry = ann, None
        truth = _drop_self(best_ids, query_ids, 10)

        def search_at(nprobe: int, candidates: int) -> np.ndarray:
            settings.candidates = candidates
            found, _ = self._search_ann(queries, 11, nprobe=nprobe)
            return _drop_self(found, query_ids, 10)

        if n > 11:
            settings.nprobe, settings.candidates, settings.measured_recall = calibrate(search_at, truth, settings.nlist)
            ann._set_nprobe(settings.nprobe)
        self._dirty = True

    def _search_ann(self, q: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Candidates from the IVF-PQ index, re-ranked exactly with the current mean."""
        ann = self._ann
        n_cand = max(ann.settings.candidates or DEFAULT_CANDIDATES, 5 * k)
        candidates = ann.candidates(centre_and_normalise(q, ann.mean), n_cand, nprobe)
        short = np.flatnonzero((candidates >= 0).sum(axis=1) < k)
        if len(short):  # the probed lists held fewer than k entries: look everywhere for those queries
            candidates[short] = ann.candidates(centre_and_normalise(q[short], ann.mean), n_cand, ann.settings.nlist)
        missing = np.iinfo(np.int64).max
        candidates = np.sort(np.where(candidates >= 0, candidates, missing), axis=1)  # ties go to the earlier entry
        mean = self.current_mean()
        qn = centre_and_normalise(q, mean)
        out_ids = np.empty((len(q), k), np.int64)
        out_d = np.empty((len(q), k), np.float32)
        step = max(1, CHUNK_ROWS // candidates.shape[1])
        for start, stop in _chunks(len(q), step):
            cand = candidates[start:stop]
            valid = cand != missing
            rows = np.nonzero(valid)[0]
            kn = centre_and_normalise(self.vectors(cand[valid]), mean)
            d = np.full(cand.shape, np.inf, np.float32)
            d[valid] = np.square(kn - qn[start:stop][rows]).sum(axis=1)
            order = np.argsort(d, axis=1, kind="stable")[:, :k]
            out_ids[start:stop] = np.take_along_axis(cand, order, 1)
            out_d[start:stop] = np.take_along_axis(d, order, 1)
        return out_ids, out_d


def _chunks(n: int, size: int = CHUNK_ROWS) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _drop_self(ids: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each row's first ``k`` ids other than its own (calibration queries are stored vectors)."""
    out = np.full((len(ids), k), -1, np.int64)
    for i, row in enumerate(ids):
        others = row[row != own[i]][:k]
        out[i, :len(others)] = others
    return out
