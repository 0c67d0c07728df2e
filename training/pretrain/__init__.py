"""DINOv2 self-supervised pretraining of CervixFM backbones, from one CPU to many GPUs (``torchrun``).

Modules, one job each: ``config`` (reference YAML, overrides), ``augment`` (multi-crop), ``masking`` (iBOT block
masks), ``data`` (image folders, whole slides, collation), ``heads`` (DINO head), ``losses`` (DINO, iBOT, KoLeo,
centering, Sinkhorn-Knopp), ``schedules``, ``param_groups``, ``meta_arch`` (student, EMA teacher, one step's losses),
``parallel`` (DDP/FSDP), ``distributed``, ``checkpoint`` (resume, teacher export), ``monitor`` (metrics, loss curve),
``knn`` (k-NN evaluation), ``trainer`` (the loop) and ``cli``. Entry points: ``run_pretraining(load_config(...))``,
``cervixfm pretrain`` and ``python -m training.pretrain``.
"""

__all__ = ["load_config", "run_pretraining", "PretrainResult"]


def __getattr__(name: str):
    # Lazy, so that building the ``cervixfm`` parser (which imports .cli) does not import torch.
    if name == "load_config":
        from .config import load_config

        return load_config
    if name in ("run_pretraining", "PretrainResult"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
