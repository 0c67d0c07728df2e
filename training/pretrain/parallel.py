"""Data parallelism for pretraining: DDP, or FSDP with one unit per block chunk (why ``block_chunks`` exists).

DDP keeps a full replica per process and averages gradients. FSDP (``torch.distributed.fsdp.fully_shard``) shards
parameters, gradients and optimiser state; each block chunk (each block when ``block_chunks`` is 0) is one unit that
is gathered just before it runs, and each head is one unit. The teacher is sharded exactly like the student so the
EMA update works shard by shard. ``SHARD_GRAD_OP`` keeps a unit's gathered parameters from forward to backward
(``reshard_after_forward=False``); ``FULL_SHARD`` frees them after the forward and gathers them again.

State dicts are read and written in full (unsharded) form, so a checkpoint does not depend on the number of processes
or the wrapping.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import Config
from .meta_arch import SSLMetaArch, autocast_dtype


def is_sharded(module: nn.Module) -> bool:
    return any(type(p).__name__ == "DTensor" for p in module.parameters())


def wrap_ddp(meta: SSLMetaArch) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    device_ids = [meta.device.index if meta.device.index is not None else 0] if meta.device.type == "cuda" else None
    meta.student_forward = {key: DDP(module, device_ids=device_ids) for key, module in meta.student.items()}


def wrap_fsdp(meta: SSLMetaArch, cfg: Config) -> None:
    import warnings

    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # The backbone returns slices of its token tensor (CLS, patches); nothing modifies them in place.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")

    for role, modules in (("student", meta.student), ("teacher", meta.teacher)):
        for key, module in modules.items():
            node = cfg.compute_precision[role][key]
            kwargs = {"reshard_after_forward": node.sharding_strategy == "FULL_SHARD"}
            if meta.device.type == "cuda":
                mp = node.mixed_precision
                kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=autocast_dtype(mp.param_dtype, meta.device),
                                                           reduce_dtype=autocast_dtype(mp.reduce_dtype, meta.device))
            if key == "backbone":
                units = list(module.blocks) if module.config.block_chunks > 0 else module.block_list()
                for unit in units:
                    fully_shard(unit, **kwargs)
            fully_shard(module, **kwargs)
    meta.student_forward = dict(meta.student.items())


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict on the CPU. Under FSDP it is gathered (every process must call this) and only
    process 0 receives it; the others get an empty dict."""
    if is_sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v.detach().cpu().clone() for k, v in state.items()}
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def load_full_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    if is_sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True, strict=True))
    else:
        module.load_state_dict(state, strict=True)


def optimizer_state(student: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimiser state keyed by parameter names, unsharded, on the CPU (under FSDP: process 0 only)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(student, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=is_sharded(student)))


def load_optimizer_state(student: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(student, optimizer, state, options=StateDictOptions(full_state_dict=True))
