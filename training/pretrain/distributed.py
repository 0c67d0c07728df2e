"""Process-group helpers that do nothing in a single process, so the same code runs on a laptop and under torchrun.

``torchrun --nproc_per_node N`` sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR; ``setup()`` then joins the group
(NCCL on GPUs, gloo on CPUs). Every collective below is a no-op when no group exists.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> bool:
    """Join the process group torchrun describes; False (and nothing done) in a plain single process."""
    if is_enabled():
        return True
    if not launched_by_torchrun():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return True


def cleanup() -> None:
    if is_enabled():
        dist.destroy_process_group()


def is_enabled() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_enabled() else 1


def rank() -> int:
    return dist.get_rank() if is_enabled() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_enabled() else 0


def is_main() -> bool:
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In place: the sum over processes (unchanged in a single process)."""
    if is_enabled():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if is_enabled():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    if not is_enabled():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_enabled():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the gradient of every process's copy and returns this process's slice.

    Each process computes the same loss on the gathered tensor; summing the copies' gradients and then letting DDP/FSDP
    average over processes gives exactly the gradient of that loss in a single process. (All-reduce is used rather
    than reduce-scatter because gloo has no reduce-scatter.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Rows of every process concatenated in rank order (``x`` itself in a single process); equal row counts."""
    if not is_enabled() or world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)
