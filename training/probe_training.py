"""The published optimisation of the linear probe, shared by the frozen and the fine-tuning modes.

AdamW (lr 1e-3, weight decay 1e-4), batches of 64 reshuffled every epoch (the last one partial), a cosine schedule
stepped after every batch from the base rate to 1e-6 over ``epochs * n_train // batch_size`` steps (the published
``T_max``, which is the exact step count only when ``batch_size`` divides ``n_train``), up to 1000 epochs, and early
stopping once the mean training loss of an epoch has not improved on the best for ``patience`` (5) epochs.
The weights of the best epoch are returned. (The published script meant to do so but kept ``state_dict()``
references, which the optimiser updates in place, so it saved the last epoch's weights; the best are kept here.)
The published frozen-feature script uses a patience of 100 where its fine-tuning script and the protocol
description use 5; ``patience`` reproduces either.
Fine-tuning trains the backbone too, with ``lr`` and ``weight_decay`` scaled by 0.01.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from core.models.heads import LinearHead


@dataclasses.dataclass
class ProbeOptions:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int = 1000
    patience: int = 5
    min_lr: float = 1e-6
    backbone_lr_scale: float = 0.01  # fine-tuning: backbone lr and weight decay = classifier's x this
    seed: int = 0
    device: str | torch.device = "cpu"

    def check(self) -> "ProbeOptions":
        from core.errors import CervixFMError

        if self.batch_size < 1 or self.epochs < 1 or self.patience < 1:
            raise CervixFMError("--batch_size, --epochs and --patience must be at least 1.")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.min_lr >= 0):
            raise CervixFMError("--learning_rate must be positive and --weight_decay non-negative.")
        return self


@dataclasses.dataclass
class FitResult:
    history: list[dict[str, float]]  # per epoch: epoch, loss, lr (at the epoch's end)
    best_epoch: int
    best_loss: float
    stopped_early: bool

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def cosine_steps(n_train: int, opts: ProbeOptions) -> int:
    return max(1, opts.epochs * n_train // opts.batch_size)


def fit(
    model: nn.Module,
    param_groups: list[dict],
    n_train: int,
    batches: Callable[[torch.Generator], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    opts: ProbeOptions,
    log: Callable[[str], None] = lambda _m: None,
    keep: nn.Module | None = None,
) -> FitResult:
    """Train ``model`` with the published recipe; on return ``model`` holds the weights of its best epoch.

    ``batches(generator)`` yields one epoch of (inputs, targets). ``keep`` restricts the best-epoch snapshot to a
    sub-module (the head), which saves copying a frozen backbone.
    """
    opts.check()
    device = torch.device(opts.device)
    optimizer = torch.optim.AdamW(param_groups, lr=opts.lr, weight_decay=opts.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cosine_steps(n_train, opts),
                                                           eta_min=opts.min_lr)
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(int(opts.seed))
    snapshot_of = keep if keep is not None else model
    best = copy.deepcopy(snapshot_of.state_dict())
    best_loss, best_epoch, waited = math.inf, -1, 0
    history: list[dict[str, float]] = []
    stopped = False
    for epoch in range(opts.epochs):
        model.train()
        total, count = 0.0, 0
        for x, y in batches(generator):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            count += 1
        epoch_loss = total / max(count, 1)
        history.append({"epoch": epoch, "loss": epoch_loss, "lr": optimizer.param_groups[-1]["lr"]})
        if epoch_loss < best_loss:
            best_loss, best_epoch, waited = epoch_loss, epoch, 0
            best = copy.deepcopy(snapshot_of.state_dict())
        else:
            waited += 1
        if epoch % 50 == 0 or waited >= opts.patience:
            log(f"epoch {epoch}: training loss {epoch_loss:.5f} (best {best_loss:.5f} at epoch {best_epoch})")
        if waited >= opts.patience:
            log(f"early stop: no training-loss improvement for {opts.patience} epochs; best epoch {best_epoch}")
            stopped = True
            break
    snapshot_of.load_state_dict(best)
    model.eval()
    return FitResult(history, best_epoch, best_loss, stopped)


def feature_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int
                    ) -> Callable[[torch.Generator], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    def epoch(generator: torch.Generator):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield features[idx], labels[idx]
    return epoch


def train_linear_probe(features: np.ndarray, labels: np.ndarray, num_classes: int, opts: ProbeOptions,
                       log: Callable[[str], None] = lambda _m: None) -> tuple[LinearHead, FitResult]:
    """A zero-initialised linear head fitted on frozen features."""
    device = torch.device(opts.device)
    x = torch.as_tensor(np.asarray(features, np.float32), device=device)
    y = torch.as_tensor(np.asarray(labels, np.int64), device=device)
    head = LinearHead(x.shape[1], num_classes).to(device)
    result = fit(head, [{"params": head.parameters()}], len(y), feature_batches(x, y, opts.batch_size), opts, log)
    return head.cpu(), result


@torch.inference_mode()
def predict_probabilities(head: nn.Module, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    head.eval()
    param = next(head.parameters())
    chunks = []
    for start in range(0, len(features), batch_size):
        x = torch.as_tensor(np.asarray(features[start:start + batch_size], np.float32), device=param.device)
        chunks.append(torch.softmax(head(x).float(), dim=-1).cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, getattr(head, "num_classes", 0)), np.float32)


class BackboneClassifier(nn.Module):
    """Backbone and linear head as one network, for fine-tuning (the backbone's feature as the published one)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, feature: str = "cls"):
        super().__init__()
        self.backbone, self.head, self.feature = backbone, head, feature

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        from core.models.inference import features_from_tokens

        return features_from_tokens(self.backbone.forward_features(x), self.feature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def finetune_param_groups(model: BackboneClassifier, opts: ProbeOptions) -> list[dict]:
    return [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad],
         "lr": opts.lr * opts.backbone_lr_scale, "weight_decay": opts.weight_decay * opts.backbone_lr_scale},
        {"params": list(model.head.parameters()), "lr": opts.lr, "weight_decay": opts.weight_decay},
    ]


def image_batches(paths: Sequence, labels: np.ndarray, batch_size: int, preprocessing, workers: int = 2
                  ) -> Callable[[torch.Generator], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Images decoded per batch (decoding overlapped on threads), reshuffled every epoch."""
    from core.images import read_rgb
    from core.models.inference import prefetched

    y_all = torch.as_tensor(np.asarray(labels, np.int64))

    def load(i: int) -> np.ndarray:
        return preprocessing.fit(read_rgb(paths[i]))

    def epoch(generator: torch.Generator):
        order = torch.randperm(len(paths), generator=generator).tolist()
        stream = prefetched(order, load, ahead=2 * batch_size, workers=workers)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            images = [next(stream) for _ in idx]
            yield preprocessing.to_tensor(images), y_all[idx]
    return epoch
