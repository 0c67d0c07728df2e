"""Running a backbone over many images: device choice, bounded prefetch of decoding, batched forward passes.

Decoding (PIL releases the GIL) overlaps with the forward pass through a small thread pool; at most a few batches
are decoded ahead so memory stays bounded however many images there are.
"""

from __future__ import annotations

import collections
import contextlib
import concurrent.futures as cf
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from ..errors import CervixFMError
from .preprocessing import Preprocessing

T = TypeVar("T")


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CervixFMError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu or auto.")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise CervixFMError(f"Unknown device {name!r}; use auto, cpu or cuda.") from exc


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on ``n`` intra-op threads, then restore the count. Tiny matrices (probe heads, test backbones)
    run slower on more: on a busy two-core machine a second thread made head training ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def features_from_tokens(out: dict, mode: str = "cls") -> torch.Tensor:
    """The embedding a preset defines: the normed CLS token, or CLS concatenated with the mean patch token."""
    cls = out["x_norm_clstoken"]
    if mode == "cls":
        return cls
    if mode == "cls+meanpatch":
        return torch.cat([cls, out["x_norm_patchtokens"].mean(dim=1)], dim=-1)
    raise ValueError(f"unknown feature mode {mode!r}")


def prefetched(items: Sequence[T], load: Callable[[T], np.ndarray], ahead: int, workers: int = 2) -> Iterator[np.ndarray]:
    """``load(item)`` for each item, in order, computed by worker threads at most ``ahead`` items in advance."""
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: collections.deque = collections.deque()
        it = iter(items)
        for item in it:
            pending.append(pool.submit(load, item))
            if len(pending) >= ahead:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield result


def batched(iterable: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.inference_mode()
def embed_images(
    model: torch.nn.Module,
    images: Iterable[np.ndarray],
    preprocessing: Preprocessing,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    feature: str = "cls",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(N, D) float32 features of RGB uint8 images, in input order."""
    device = torch.device(device)
    chunks: list[np.ndarray] = []
    for batch in batched((preprocessing.fit(img) for img in images), batch_size):
        x = preprocessing.to_tensor(batch).to(device, non_blocking=True)
        out = model.forward_features(x)
        chunks.append(features_from_tokens(out, feature).float().cpu().numpy())
        if progress:
            progress(len(batch))
    if not chunks:
        return np.zeros((0, getattr(model, "embed_dim", 0)), np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)
