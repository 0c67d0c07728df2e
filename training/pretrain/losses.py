"""DINOv2's losses: DINO (image level), iBOT (masked patches), KoLeo, with centering or Sinkhorn-Knopp targets.

Teacher targets are made non-trivial in one of two ways. Centering subtracts an EMA (momentum 0.9) of the mean
teacher output before a sharp softmax, which prevents one prototype from winning every image. Sinkhorn-Knopp
(3 iterations) instead rescales ``exp(t / T)`` so that every prototype receives the same total mass over the batch and
every sample sums to one. Both are computed over the global batch: sums are all-reduced when a process group exists.

Departures from DINOv2's code, each so that N processes compute what 1 process computes with the same global batch:
the iBOT center moves towards the mean over all masked patches of the global batch (DINOv2 averages per-GPU means);
KoLeo can look for nearest neighbours in the whole global batch (``dino.koleo_global_batch``; DINOv2: per GPU).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed

STUDENT_TEMPERATURE = 0.1
CENTER_MOMENTUM = 0.9
SINKHORN_ITERATIONS = 3


def cross_entropy(teacher_probs: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row ``-sum_k p_k log softmax(s / T)_k``."""
    return -(teacher_probs * F.log_softmax(student_logits.float() / temperature, dim=-1)).sum(dim=-1)


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, temperature: float, n_rows_global: int | None = None,
                   iterations: int = SINKHORN_ITERATIONS) -> torch.Tensor:
    """Balanced soft assignments of rows to prototypes; each output row sums to 1.

    ``n_rows_global``: the number of rows over all processes (default: this process's count times the world size).
    """
    q = torch.exp(teacher_logits.float() / temperature).t()  # (K, B)
    k = q.shape[0]
    b = n_rows_global if n_rows_global is not None else q.shape[1] * distributed.world_size()
    total = distributed.all_reduce_sum(q.sum().reshape(1))
    q /= total
    for _ in range(iterations):
        rows = distributed.all_reduce_sum(q.sum(dim=1, keepdim=True))
        q /= rows
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


@torch.no_grad()
def update_center_ema(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float) -> None:
    """``center <- m * center + (1 - m) * mean of the rows over all processes`` (unchanged when there are none)."""
    count = torch.tensor([teacher_logits.shape[0]], dtype=torch.float32, device=teacher_logits.device)
    stats = distributed.all_reduce_sum(torch.cat([teacher_logits.float().sum(dim=0), count]))
    if stats[-1] > 0:
        center.mul_(momentum).add_((stats[:-1] / stats[-1]).unsqueeze(0), alpha=1 - momentum)


@torch.no_grad()
def target_statistics(teacher_probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """How the teacher's targets (rows of probabilities over K prototypes) spread, over the global batch.

    The two ways DINO collapses look different here, although the loss alone can hide either: every image on the
    same prototype gives entropy ~0 *and* ~1 prototype in use (the loss is then ~0), uniform targets give entropy
    log K (the loss sits at log K). Healthy targets are sharp per image and spread over many prototypes.
    ``teacher_entropy``: mean per-row entropy (nats). ``teacher_prototypes_used``: exp(entropy of the mean row), the
    effective number of prototypes the batch is spread over (1..K).
    """
    p = teacher_probs.float().flatten(0, -2)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=-1)
    count = torch.tensor([p.shape[0]], dtype=torch.float32, device=p.device)
    stats = distributed.all_reduce_sum(torch.cat([entropy.sum().reshape(1), p.sum(dim=0), count]))
    n = stats[-1].clamp_min(1.0)
    marginal = stats[1:-1] / n
    marginal_entropy = -(marginal * torch.log(marginal.clamp_min(1e-30))).sum()
    return {"teacher_entropy": stats[0] / n, "teacher_prototypes_used": torch.exp(marginal_entropy)}


class _CenteredTargets(nn.Module):
    """What the DINO and iBOT losses share: the student temperature and the teacher's centre (an EMA of its logits
    over every process), which centred-softmax targets subtract."""

    def __init__(self, out_dim: int, student_temp: float = STUDENT_TEMPERATURE, center_momentum: float = CENTER_MOMENTUM):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA of the mean of the rows (over every process), applied after this step's targets were computed."""
        update_center_ema(self.center, teacher_logits, self.center_momentum)


class DINOLoss(_CenteredTargets):
    """Cross-entropy between teacher targets and student predictions of CLS tokens over crop pairs."""

    @torch.no_grad()
    def sinkhorn_knopp_teacher(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        return sinkhorn_knopp(teacher_logits, teacher_temp)

    def forward(self, student_logits: Sequence[torch.Tensor], teacher_probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum over (student chunk, teacher chunk) pairs of the batch-mean cross-entropy (DINOv2 divides by the
        number of terms outside)."""
        total = student_logits[0].new_zeros((), dtype=torch.float32)
        for s in student_logits:
            log_p = F.log_softmax(s.float() / self.student_temp, dim=-1)
            for t in teacher_probs:
                total = total - (t * log_p).sum(dim=-1).mean()
        return total


class iBOTPatchLoss(_CenteredTargets):
    """Cross-entropy on masked patch tokens, each image's patches weighted 1/(its masked count); the centre is the
    mean over the masked patches."""

    @torch.no_grad()
    def sinkhorn_knopp_teacher(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        n = distributed.all_reduce_sum(torch.tensor([teacher_logits.shape[0]], dtype=torch.float32))
        return sinkhorn_knopp(teacher_logits, teacher_temp, n_rows_global=int(n.item()))

    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor, masks_weight: torch.Tensor,
                n_images: int) -> torch.Tensor:
        """``student_logits``/``teacher_probs``: (M, K) for the M masked patches; ``n_images``: global crops in the
        batch (unmasked ones included), the denominator of the per-image average."""
        if student_logits.shape[0] == 0:
            return student_logits.sum() * 0.0
        ce = cross_entropy(teacher_probs, student_logits, self.student_temp)
        return (ce * masks_weight).sum() / n_images


class KoLeoLoss(nn.Module):
    """Kozachenko-Leonenko entropy estimate: push each L2-normalised vector away from its nearest neighbour.

    ``-mean_i log(||x_i - x_nn(i)|| + eps)``, in float32 whatever the autocast state. With ``global_batch``, the
    neighbours are sought among the rows of every process (gathered with gradient).
    """

    def __init__(self, eps: float = 1e-8, global_batch: bool = True):
        super().__init__()
        self.eps = eps
        self.global_batch = global_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            x = x.float()
            if self.global_batch:
                x = distributed.gather_with_grad(x)
            x = F.normalize(x, p=2, dim=-1, eps=self.eps)
            with torch.no_grad():
                # Distances from coordinate differences, not from 2 - 2 x.y: a fresh ViT's CLS tokens lie ~1e-6
                # apart, below float32 resolution of a dot product near 1, which would make the choice arbitrary.
                dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
                dist.fill_diagonal_(float("inf"))  # a row never picks itself
                nearest = dist.argmin(dim=1)
            distances = (x - x[nearest] + self.eps).norm(dim=-1)  # eps inside, as torch's PairwiseDistance
            return -torch.log(distances + self.eps).mean()
