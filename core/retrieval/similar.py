"""Click-to-retrieve: a point on a slide becomes the crop a bundle's backbone embeds there, and its nearest cells on
the same slide and in reference atlases come back, each with its distance and label.

The query is cut exactly as the slide's cells were (``core.cells.crops.read_crop``: the bundle's tile size at its
target MPP, centred on the point), so a click on a cell's nucleus finds that cell first at a distance near zero.
The slide's own cells are searched in memory (``KeySet``, the published protocol) from the embeddings the cell
stage made; atlases are ``CellIndex`` folders, searched exactly as ``cervixfm search`` does, with the published
k-NN label vote. Embeddings of two backbones are never compared: a slide analysed, or an atlas built, with another
backbone gives a message for that source instead of meaningless neighbours.

``SimilarCellSearch`` keeps the loaded model, the slide's key set and the opened atlases between queries. It is
not thread-safe: one worker thread owns it (the viewer's similar-cell panel).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import CervixFMError, InputError

#: Hits returned per source, and neighbours that vote on an atlas label (published MV@10).
DEFAULT_K = 24
VOTE_K = 10
SLIDE_SOURCE = "This slide"


@dataclasses.dataclass
class Hit:
    source: str  # SLIDE_SOURCE or the atlas's name
    rank: int
    distance: float  # squared L2 between centred, normalised embeddings (0 = same direction)
    label: str | None
    score: float | None  # abnormality of a slide cell, the row's score of an atlas entry
    slide: str | None = None  # the slide a region hit lies on
    box: tuple[float, float, float, float] | None = None  # its level-0 x, y, w, h
    image: str | None = None  # the image file of an atlas entry
    cell: int | None = None  # row of the query slide's cell table

    @property
    def centre(self) -> tuple[float, float] | None:
        if self.box is None:
            return None
        x, y, w, h = self.box
        return x + w / 2, y + h / 2


@dataclasses.dataclass
class HitList:
    source: str
    hits: list[Hit]
    suggestion: tuple[str, float, dict[str, int]] | None = None  # atlas label vote: (label, confidence, votes)
    error: str | None = None  # why this source gave no hits


@dataclasses.dataclass
class SimilarResult:
    query: np.ndarray  # the RGB crop that was embedded
    box: tuple[float, float, float, float]  # its level-0 x, y, w, h
    mpp: float
    size: int
    lists: list[HitList]

    @property
    def hits(self) -> list[Hit]:
        return [h for hl in self.lists for h in hl.hits]


class SimilarCellSearch:
    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._model: tuple[Path, float, Any] | None = None  # (bundle folder, manifest mtime, AnalysisModel)
        self._keys: tuple[Any, Any] | None = None  # (cell table, KeySet)
        self._atlases: dict[str, Any] = {}

    # -------------------------------------------------------------------------------------------- resources
    def load_model(self, bundle: str | os.PathLike):
        """The bundle's model, loaded once (again only when its manifest changed)."""
        from ..models.bundle import MANIFEST
        from ..pipeline.analysis_model import model_from_bundle

        folder = Path(bundle)
        try:
            stamp = (folder / MANIFEST).stat().st_mtime
        except OSError:
            raise InputError(f"Model bundle {folder} not found (no {MANIFEST} in it).") from None
        if self._model is None or self._model[0] != folder or self._model[1] != stamp:
            self._model = None
            self._model = (folder, stamp, model_from_bundle(folder, device=self.device))
        return self._model[2]

    def forget_model(self) -> None:
        self._model = None

    def slide_keys(self, cells, result=None):
        """The key set of a cell table's embeddings (read from the result folder when the table has none)."""
        from .keyset import KeySet

        if self._keys is not None and self._keys[0] is cells:
            return self._keys[1]
        vectors = cells.embeddings
        if vectors is None:
            if result is None:
                raise InputError("These cells were localised without a model, so they have no embeddings to "
                                 "search: run the cell analysis with a bundle.")
            vectors = result.read_cells(embeddings=True).table.embeddings
            if vectors is None or len(vectors) != len(cells):
                raise InputError(f"The cells of {result.folder} have no embeddings matching the cells shown: re-run "
                                 "the cell analysis with a bundle.")
        self._keys = None
        self._keys = (cells, KeySet(vectors))
        return self._keys[1]

    def open_atlas(self, path: str | os.PathLike):
        """An atlas (or labelled index) folder, opened and checked once."""
        from .atlas import open_atlas

        key = str(Path(path).resolve())
        if key not in self._atlases:
            self._atlases[key] = open_atlas(path)
        return self._atlases[key]

    def forget_atlas(self, path: str | os.PathLike) -> None:
        self._atlases.pop(str(Path(path).resolve()), None)

    # ------------------------------------------------------------------------------------------------ query
    def query(self, slide_path: str | os.PathLike, x: float, y: float, bundle: str | os.PathLike, *,
              slide_mpp: tuple[float, float] | None = None, cells=None, result=None,
              atlases: Sequence[str | os.PathLike] = (), cell: int | None = None,
              k: int = DEFAULT_K, vote_k: int = VOTE_K) -> SimilarResult:
        """Embed the crop centred on level-0 (x, y) of the slide and search the slide's ``cells`` (a
        ``CellTable``; ``result`` its ``SlideResult``, for class names and the backbone check) and each atlas.

        ``cell``: the row of ``cells`` the point was snapped to; its own crop box is read (the pixels the cell stage
        embedded, to the level-0 pixel) when it has the bundle's crop size. A source that cannot answer gets an
        error message, not an exception; only a query that cannot be made at all (no model, unreadable slide,
        a point outside it) raises."""
        from ..cells.crops import read_crop
        from ..slides import open_slide
        from .identity import identity_of_model

        model = self.load_model(bundle)
        size, mpp = int(model.tile_size), float(model.target_mpp)
        with open_slide(slide_path, mpp=slide_mpp) as slide:
            w, h = slide.dimensions
            if not (0 <= x < w and 0 <= y < h):
                raise InputError(f"({x:,.0f}, {y:,.0f}) lies outside the slide ({w:,} x {h:,} px).")
            box = _cell_crop_box(cells, cell, size * mpp / slide.mpp[0], size * mpp / slide.mpp[1])
            if box is not None:
                crop = slide.read_scaled(*box, size, size)
            else:
                crop, box = read_crop(slide, x, y, mpp, size)
        feature = model.encode([crop])["features"]
        identity = identity_of_model(model)
        lists = []
        if cells is not None:
            lists.append(self._search_slide(feature, identity, str(slide_path), cells, result, k))
        for path in atlases:
            lists.append(self._search_atlas(feature, identity, path, k, vote_k))
        return SimilarResult(crop, tuple(float(v) for v in box), mpp, size, lists)

    def _search_slide(self, feature, identity, slide_path, cells, result, k) -> HitList:
        from ..cells.review import classifier_of
        from .identity import check_same_backbone, identity_of_result

        try:
            if result is not None and (result.model or {}).get("sha256"):
                check_same_backbone(identity_of_result(result), identity, "This slide's cell analysis",
                                    "the query (the current bundle)")
            keys = self.slide_keys(cells, result)
            distances, positions = keys.search(feature, k)
        except CervixFMError as exc:
            return HitList(SLIDE_SOURCE, [], error=str(exc))
        head, classes, _ = classifier_of(cells, result)
        hits = []
        for rank, (d, i) in enumerate(zip(distances[0].tolist(), positions[0].tolist()), start=1):
            label = score = None
            if head is not None:
                c = int(np.argmax(cells.heads[head]["probs"][i]))
                label = classes[c] if classes and c < len(classes) else f"class {c}"
                score = float(cells.heads[head]["abnormality"][i])
            hits.append(Hit(SLIDE_SOURCE, rank, float(d), label, score, slide_path,
                            tuple(float(v) for v in cells.crop_boxes[i]), cell=int(i)))
        return HitList(SLIDE_SOURCE, hits)

    def _search_atlas(self, feature, identity, path, k, vote_k) -> HitList:
        from .atlas import vote

        name = Path(path).name
        try:
            atlas = self.open_atlas(path)
            result = atlas.search(feature, k, backbone=identity)
        except CervixFMError as exc:
            return HitList(name, [], error=f"Atlas {name}: {exc}")
        records = result.records(0)
        root = atlas.info.get("data_root")
        hits = []
        for r in records:
            image = str(Path(root) / r["name"]) if r.get("name") and root and not r.get("slide") else None
            box = (float(r["x"]), float(r["y"]), float(r["w"]), float(r["h"])) \
                if r.get("slide") and r.get("w") else None
            hits.append(Hit(name, int(r["rank"]), float(r["distance"]), r.get("label") or None, r.get("score"),
                            r.get("slide") or None, box, image))
        labels = [h.label for h in hits[:vote_k]]
        suggestion = vote(labels) if labels and all(labels) else None
        return HitList(name, hits, suggestion)


def _cell_crop_box(cells, cell: int | None, w0: float, h0: float) -> tuple[float, float, float, float] | None:
    """The stored crop box of ``cells[cell]`` when it is the size the bundle embeds (the same backbone setup)."""
    if cells is None or cell is None or not 0 <= cell < len(cells):
        return None
    box = tuple(float(v) for v in cells.crop_boxes[cell])
    return box if abs(box[2] - w0) <= 1.0 and abs(box[3] - h0) <= 1.0 else None
