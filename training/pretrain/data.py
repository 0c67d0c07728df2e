"""Pretraining images: folders of cell crops and whole slides, multi-crop views, and batches with iBOT masks.

Everything random here is a pure function of (seed, position in the stream of samples): sample ``g`` of the run is
image ``permutation_p[g mod N]`` of pass ``p = g // N`` (folders) or a random cell-bearing tile (slides), augmented
with a generator seeded by ``(seed, g)``; the masks of iteration ``t`` come from a generator seeded by ``(seed, t)``
and are laid over the *global* batch before each process takes its share. So a run is the same on 1 or N processes
(same global batch), whatever the number of loader workers, and a resumed run continues exactly where it stopped:
the iteration number is the whole data state.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from core.errors import InputError
from core.images import IMAGE_SUFFIXES, read_rgb

from .augment import MultiCropAugmentation
from .masking import MaskingGenerator, batch_masks

SLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".tif", ".tiff", ".svslide"}
# Streams of the per-sample and per-iteration generators, so they never coincide.
_AUGMENT_STREAM, _MASK_STREAM, _ORDER_STREAM, _TILE_STREAM = 0, 1, 2, 3


def sample_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), stream, int(index)])))


# ---------------------------------------------------------------------------------------------------- sources
class ImageFolderSource:
    """Every image file under the given folders (recursively, sorted), decoded on demand or kept in memory."""

    kind = "images"

    def __init__(self, paths: Sequence[Path], cache: bool = True):
        files: list[Path] = []
        for root in paths:
            if root.is_dir():
                files += sorted(p for p in root.rglob("*")
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            elif root.is_file():
                files.append(root)
        self.files = files
        self.cache = cache
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> np.ndarray:
        if self.cache and index in self._images:
            return self._images[index]
        image = read_rgb(self.files[index])
        if self.cache:
            self._images[index] = image
        return image

    def __getstate__(self):  # loader workers start with an empty cache rather than a pickled copy
        state = dict(self.__dict__)
        state["_images"] = {}
        return state


@dataclasses.dataclass
class _SlideEntry:
    path: Path
    weight: float  # cell-bearing area in level-0 pixels: slides are drawn in proportion to it
    cells: np.ndarray  # (K, 2) level-0 centres of the cell-bearing mask pixels
    cell_size: tuple[float, float]  # level-0 size of one mask pixel


class SlideTileSource:
    """Random tiles from the cell-bearing area of whole slides (through ``core.slides``).

    A tile is centred on a random pixel of the slide's foreground mask (``detect_foreground(...).cells``, the
    detected cells before the safety margin), jittered within that pixel, and read at ``tile_mpp`` as a
    ``tile_size`` square. Slides are drawn in proportion to their cell-bearing area. Masks are computed once per
    slide when the source is built; the slides themselves are opened lazily in each loader worker.
    """

    kind = "slides"

    def __init__(self, paths: Sequence[Path], tile_size: int = 224, tile_mpp: float = 0.5):
        from core.slides import detect_foreground, open_slide

        self.tile_size = int(tile_size)
        self.tile_mpp = float(tile_mpp)
        self.entries: list[_SlideEntry] = []
        for path in paths:
            with open_slide(path) as slide:
                fg = detect_foreground(slide)
                rows, cols = np.nonzero(fg.cells)
                if len(rows) == 0:
                    continue
                dx, dy = fg.downsample
                centres = np.stack([(cols + 0.5) * dx, (rows + 0.5) * dy], axis=1)
                self.entries.append(_SlideEntry(Path(path), float(len(rows) * dx * dy), centres, (dx, dy)))
        if not self.entries:
            raise InputError("None of the slides has a cell-bearing area to sample tiles from: "
                             + ", ".join(str(p) for p in paths))
        weights = np.array([e.weight for e in self.entries])
        self.probabilities = weights / weights.sum()
        self._slides: dict[int, object] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.entries)

    def _slide(self, index: int):
        from core.slides import open_slide

        with self._lock:
            if index not in self._slides:
                self._slides[index] = open_slide(self.entries[index].path)
            return self._slides[index]

    def tile_box(self, rng: np.random.Generator) -> tuple[int, float, float, float, float]:
        """(slide index, x, y, w0, h0): the level-0 rectangle of a random cell-bearing tile."""
        k = int(rng.choice(len(self.entries), p=self.probabilities))
        entry = self.entries[k]
        cx, cy = entry.cells[int(rng.integers(len(entry.cells)))]
        cx += (rng.random() - 0.5) * entry.cell_size[0]
        cy += (rng.random() - 0.5) * entry.cell_size[1]
        slide = self._slide(k)
        w0 = self.tile_size * self.tile_mpp / slide.mpp[0]
        h0 = self.tile_size * self.tile_mpp / slide.mpp[1]
        return k, cx - w0 / 2, cy - h0 / 2, w0, h0

    def random_tile(self, rng: np.random.Generator) -> np.ndarray:
        k, x, y, w0, h0 = self.tile_box(rng)
        return self._slide(k).read_scaled(x, y, w0, h0, self.tile_size, self.tile_size)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_slides"] = {}
        state["_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


def split_paths(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(image inputs, slide inputs). A folder holding slide files counts as slides; TIFFs count as slides when they
    are pyramidal (a plain TIFF cell crop counts as an image)."""
    images, slides = [], []
    for path in paths:
        if not path.exists():
            raise InputError(f"Pretraining data {path} does not exist (train.dataset_path).")
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*")) if p.is_file() and _is_slide(p)]
            (slides.extend(found) if found else images.append(path))
        elif _is_slide(path):
            slides.append(path)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            raise InputError(f"{path} is neither an image, a slide nor a folder of them (train.dataset_path).")
    return images, slides


def _is_slide(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix not in SLIDE_SUFFIXES:
        return False
    if suffix not in (".tif", ".tiff"):
        return True
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0] if tif.series else None
            return bool(series is not None and (len(series.levels) > 1 or max(series.shape[:2]) > 4096))
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------------- dataset
class MultiCropDataset(torch.utils.data.Dataset):
    """Item ``g`` = the multi-crop views of the run's ``g``-th sample (see the module docstring)."""

    def __init__(self, augmentation: MultiCropAugmentation, seed: int, images: ImageFolderSource | None = None,
                 slides: SlideTileSource | None = None):
        if images is None and slides is None:
            raise InputError("No pretraining data: set train.dataset_path to image folders or slides.")
        if images is not None and len(images) == 0:
            images = None
        self.images, self.slides = images, slides
        if self.images is None and self.slides is None:
            raise InputError("No images or slides found in train.dataset_path.")
        self.augmentation = augmentation
        self.seed = int(seed)
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:  # a nominal length: positions are unbounded
        return len(self.images) if self.images is not None else 10**9

    def _order(self, epoch: int) -> np.ndarray:
        order = self._orders.get(epoch)
        if order is None:
            order = sample_rng(self.seed, _ORDER_STREAM, epoch).permutation(len(self.images))
            self._orders = {epoch: order}  # one pass at a time is enough
        return order

    def source_image(self, position: int) -> np.ndarray:
        """The un-augmented image of sample ``position``."""
        if self.images is not None and self.slides is not None:
            # both kinds: alternate by a coin of the sample's own generator
            use_slide = sample_rng(self.seed, _TILE_STREAM, position).random() < 0.5
            if not use_slide:
                return self._folder_image(position)
            return self.slides.random_tile(sample_rng(self.seed, _TILE_STREAM, position + 1))
        if self.slides is not None:
            return self.slides.random_tile(sample_rng(self.seed, _TILE_STREAM, position))
        return self._folder_image(position)

    def _folder_image(self, position: int) -> np.ndarray:
        n = len(self.images)
        return self.images.image(int(self._order(position // n)[position % n]))

    def __getitem__(self, position: int) -> dict:
        image = self.source_image(int(position))
        crops = self.augmentation(image, sample_rng(self.seed, _AUGMENT_STREAM, position))
        return {"position": int(position), **crops}


class BatchPositions(torch.utils.data.Sampler):
    """This process's sample positions for iterations ``start .. stop-1``: iteration ``t`` covers the global
    positions ``t*G .. t*G + G - 1`` (``G`` = global batch) and process ``r`` takes ``r*B .. r*B + B - 1`` of them."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start, self.stop = int(start), int(stop)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        global_batch = self.batch_size * self.world_size
        for t in range(self.start, self.stop):
            first = t * global_batch + self.rank * self.batch_size
            yield list(range(first, first + self.batch_size))


class MultiCropCollator:
    """Stacks views crop-major (all first global crops, then all second ones; locals likewise) and adds the iBOT
    masks of this process's share of the global batch."""

    def __init__(self, mask_generator: MaskingGenerator, ratio_min_max: Sequence[float], mask_probability: float,
                 seed: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.mask_generator = mask_generator
        self.ratio_min_max = (float(ratio_min_max[0]), float(ratio_min_max[1]))
        self.mask_probability = float(mask_probability)
        self.seed = int(seed)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)

    def iteration_masks(self, iteration: int) -> np.ndarray:
        """(2, G, H*W) masks of the whole global batch of ``iteration`` (global crop c of global sample j)."""
        global_batch = self.batch_size * self.world_size
        rng = sample_rng(self.seed, _MASK_STREAM, iteration)
        masks = batch_masks(2 * global_batch, self.mask_generator, self.ratio_min_max, self.mask_probability, rng)
        return masks.reshape(2, global_batch, -1)

    def __call__(self, samples: list[dict]) -> dict:
        global_batch = self.batch_size * self.world_size
        positions = [s["position"] for s in samples]
        iteration = positions[0] // global_batch
        offset = positions[0] - iteration * global_batch
        n_global = len(samples[0]["global_crops"])
        n_local = len(samples[0]["local_crops"])
        global_crops = torch.stack([s["global_crops"][c] for c in range(n_global) for s in samples])
        local_crops = (torch.stack([s["local_crops"][c] for c in range(n_local) for s in samples])
                       if n_local else None)
        masks = self.iteration_masks(iteration)[:, offset:offset + len(samples)].reshape(n_global * len(samples), -1)
        masks = torch.from_numpy(np.ascontiguousarray(masks))
        return batch_from_masks(global_crops, local_crops, masks, iteration, positions)


def batch_from_masks(global_crops: torch.Tensor, local_crops: torch.Tensor | None, masks: torch.Tensor,
                     iteration: int = 0, positions: Sequence[int] = ()) -> dict:
    """A training batch: crops, masks, the flat indices of masked patches and each one's weight 1/(masked count of
    its image), as the iBOT loss needs them."""
    mask_indices = masks.flatten().nonzero().flatten()
    counts = masks.sum(-1).clamp(min=1).float()
    masks_weight = (1.0 / counts).unsqueeze(-1).expand_as(masks)[masks]
    return {
        "global_crops": global_crops,
        "local_crops": local_crops,
        "masks": masks,
        "mask_indices": mask_indices,
        "masks_weight": masks_weight,
        "iteration": int(iteration),
        "positions": list(positions),
    }


def build_sources(paths: Sequence[Path], tile_size: int, tile_mpp: float, cache: bool
                  ) -> tuple[ImageFolderSource | None, SlideTileSource | None]:
    if not paths:
        raise InputError("No pretraining data: set train.dataset_path=FOLDER (images or slides), e.g. "
                         "`cervixfm pretrain --config tiny train.dataset_path=cells/`.")
    image_paths, slide_paths = split_paths(paths)
    images = ImageFolderSource(image_paths, cache=cache) if image_paths else None
    if images is not None and len(images) == 0:
        if not slide_paths:
            raise InputError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) or slides found in "
                             + ", ".join(str(p) for p in paths) + ".")
        images = None
    slides = SlideTileSource(slide_paths, tile_size, tile_mpp) if slide_paths else None
    return images, slides


def describe_sources(images: ImageFolderSource | None, slides: SlideTileSource | None) -> str:
    parts = []
    if images is not None:
        parts.append(f"{len(images)} images")
    if slides is not None:
        parts.append(f"{len(slides)} slides (random {slides.tile_size}-px tiles at {slides.tile_mpp:g} µm/px)")
    return " and ".join(parts)


def make_loader(dataset: MultiCropDataset, collator: MultiCropCollator, start: int, stop: int, batch_size: int,
                rank: int, world_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    sampler = BatchPositions(start, stop, batch_size, rank, world_size)
    kwargs = {}
    if num_workers > 0:
        kwargs = {"persistent_workers": False, "prefetch_factor": 2}
    # Its own generator: creating the iterator must not draw from the global one, which drop path uses and a
    # resumed run restores.
    generator = torch.Generator().manual_seed(dataset.seed)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, num_workers=num_workers,
                                       generator=generator, **kwargs)
