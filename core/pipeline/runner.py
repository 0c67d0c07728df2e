"""Tiles -> reader threads -> bounded buffer -> batches -> encoder, with progress, cancellation and priorities.

Reading overlaps with compute: reader threads fill a buffer of at most a few batches (memory stays bounded whatever
the slide size) while the calling thread runs the encoder. Each finished batch goes to the journal before progress is
reported, so a crash loses at most the batch in flight. A tile that cannot be read is logged, skipped and recorded.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import CervixFMError
from .journal import Journal
from .scheduler import TileScheduler, tiles_in_region

log = logging.getLogger(__name__)

Encoder = Callable[[list[np.ndarray]], Mapping[str, np.ndarray]]  # images -> {"features": (B, D), ...}


@dataclasses.dataclass
class Progress:
    done: int
    total: int
    rate: float  # tiles per second over this run
    eta_s: float | None
    batch_indices: np.ndarray  # tiles of the batch just finished
    batch_outputs: Mapping[str, np.ndarray]


@dataclasses.dataclass
class RunOutcome:
    done: int
    total: int
    skipped: dict[int, str]
    cancelled: bool
    seconds: float


class TileRun:
    def __init__(
        self,
        boxes: np.ndarray,
        read_tile: Callable[[int], np.ndarray],
        encode: Encoder,
        journal: Journal,
        batch_size: int = 32,
        readers: int = 2,
        buffer_batches: int = 2,
        order: Sequence[int] | None = None,
    ):
        """``order``: the tiles to run, in this order (default: every tile by index). A subset (the tiles of one
        region) makes a run of just those: progress counts them only, and the rest stay for a later run."""
        self.boxes = np.asarray(boxes)
        self.read_tile = read_tile
        self.encode = encode
        self.journal = journal
        self.batch_size = max(1, int(batch_size))
        self.readers = max(1, int(readers))
        scope = list(range(len(self.boxes))) if order is None else list(dict.fromkeys(int(i) for i in order))
        self._scope = set(scope)
        self.total = len(scope)
        done = journal.done_tiles()
        self.skipped: dict[int, str] = journal.skipped()
        todo = [i for i in scope if i not in done and i not in self.skipped]
        self.already_done = len(done & self._scope)
        self.scheduler = TileScheduler(todo)
        self._cancel = threading.Event()
        self._buffer: queue.Queue = queue.Queue(maxsize=self.buffer_size(buffer_batches))

    def buffer_size(self, batches: int) -> int:
        return max(1, batches) * self.batch_size

    # --------------------------------------------------------------------------------------------- control
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def prioritise_region(self, x0: float, y0: float, x1: float, y1: float) -> int:
        """Tiles of this level-0 region are read next (nearest the centre first); returns how many were pending."""
        return self.scheduler.prioritise(tiles_in_region(self.boxes, x0, y0, x1, y1))

    def prioritise(self, indices) -> int:
        return self.scheduler.prioritise(indices)

    # --------------------------------------------------------------------------------------------- running
    def _reader(self) -> None:
        try:
            while not self._cancel.is_set():
                i = self.scheduler.take()
                if i is None:
                    break
                try:
                    item = (i, self.read_tile(i))
                except CervixFMError as exc:
                    log.warning("tile %d skipped: %s", i, exc)
                    item = (i, exc)
                while not self._cancel.is_set():
                    try:
                        self._buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        finally:
            self._buffer.put(None)  # this reader is finished (the buffer has room for it: see run())

    def run(self, progress: Callable[[Progress], None] | None = None) -> RunOutcome:
        start = time.perf_counter()
        threads = [threading.Thread(target=self._reader, name=f"tile-reader-{k}", daemon=True)
                   for k in range(self.readers)]
        # Sentinels must never block: enlarge the buffer by one slot per reader.
        self._buffer.maxsize += self.readers
        for t in threads:
            t.start()
        finished_readers = 0
        computed = 0
        new_skips: dict[int, str] = {}
        try:
            while finished_readers < self.readers and not self._cancel.is_set():
                batch: list[tuple[int, np.ndarray]] = []
                while len(batch) < self.batch_size and finished_readers < self.readers:
                    try:
                        item = self._buffer.get(timeout=0.1)
                    except queue.Empty:
                        if self._cancel.is_set():
                            break
                        continue
                    if item is None:
                        finished_readers += 1
                    elif isinstance(item[1], Exception):
                        new_skips[item[0]] = str(item[1])
                    else:
                        batch.append(item)
                if new_skips:
                    self.journal.record_skipped(new_skips)
                    self.skipped.update(new_skips)
                    new_skips = {}
                if not batch:
                    continue
                indices = np.array([i for i, _ in batch], np.int64)
                outputs = dict(self.encode([img for _, img in batch]))
                coords = self.boxes[indices, :2]
                self.journal.append(indices, coords, **outputs)
                computed += len(batch)
                if progress:
                    elapsed = time.perf_counter() - start
                    rate = computed / elapsed if elapsed > 0 else 0.0
                    done = self.already_done + computed
                    remaining = self.total - done - sum(1 for i in self.skipped if i in self._scope)
                    progress(Progress(done, self.total, rate, remaining / rate if rate else None, indices, outputs))
        finally:
            self._cancel_readers_if_needed(threads)
        return RunOutcome(self.already_done + computed, self.total, dict(self.skipped), self._cancel.is_set(),
                          time.perf_counter() - start)

    def _cancel_readers_if_needed(self, threads: list[threading.Thread]) -> None:
        if any(t.is_alive() for t in threads):
            self._cancel.set()
            while any(t.is_alive() for t in threads):
                try:
                    self._buffer.get(timeout=0.05)
                except queue.Empty:
                    pass
        for t in threads:
            t.join(timeout=5)
