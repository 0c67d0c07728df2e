"""Student and EMA teacher with their DINO/iBOT heads, and one training step's losses (DINOv2's SSLMetaArch).

The teacher sees the two global crops; the student sees them with iBOT masks, plus the local crops. Per step:

1. teacher (no gradients): CLS tokens of both global crops, swapped so that crop A is the target of crop B and vice
   versa, and the patch tokens at the masked positions go through the teacher head(s); targets are centred softmaxes
   at the scheduled temperature (or Sinkhorn-Knopp assignments);
2. student: backbone over [global crops (masked), local crops] in one call, then one head call over local CLS,
   global CLS and masked patch tokens;
3. losses: DINO cross-entropy over every (student crop, teacher global crop) pair except a crop with itself, divided
   by the number of pairs; KoLeo on the global CLS tokens (weight ``dino.koleo_loss_weight``, summed over the two
   crops); iBOT cross-entropy on masked patches.

The teacher is never given to the optimiser, its parameters do not require gradients, and it is updated only by
``update_teacher`` (EMA of the student) under ``no_grad``.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Callable

import torch
from torch import nn

from core.errors import ConfigError
from core.models import ViTConfig, build_vit, get_preset
from core.models.presets import PRESETS

from .config import Config
from .heads import build_head
from .losses import DINOLoss, KoLeoLoss, iBOTPatchLoss, target_statistics

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


# ---------------------------------------------------------------------------------------------------- building
def backbone_config(cfg: Config) -> ViTConfig:
    """The student architecture: a DINOv2 arch name built from the student keys, or a CervixFM preset.

    A preset fixes the architecture; only the training settings (drop-path rate, layer-scale init value) and the
    position-table size (the global crop size, as DINOv2 trains) come from the config.
    """
    s, crops = cfg.student, cfg.crops
    if s.arch in PRESETS:
        base = get_preset(s.arch).config
        config = base.replace(img_size=int(crops.global_crops_size), drop_path_rate=float(s.drop_path_rate),
                              init_values=float(s.layerscale) if base.init_values else None)
    else:
        block = {k: v for k, v in s.items() if k not in ("embed_dim", "depth", "num_heads")}
        config = ViTConfig.from_mapping({"student": block, "crops": {"global_crops_size": crops.global_crops_size}})
        sizes = {k: int(s[k]) for k in ("embed_dim", "depth", "num_heads") if s.get(k) is not None}
        if sizes:
            config = config.replace(**sizes)
    for name, size in (("global", crops.global_crops_size), ("local", crops.local_crops_size)):
        if size % config.patch_size:
            raise ConfigError(f"crops.{name}_crops_size {size} is not a multiple of the patch size {config.patch_size}.")
    return config


def drop_path_rates(depth: int, rate: float, uniform: bool) -> list[float]:
    """DINOv2: the same rate in every block, or rising linearly from 0 to ``rate``."""
    if uniform or depth == 1:
        return [float(rate)] * depth
    return [float(rate) * i / (depth - 1) for i in range(depth)]


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """fp16 on a GPU, bf16 for fp16 requests on a CPU (CPU fp16 autocast is slow or missing), None for fp32."""
    dtype = DTYPES[name]
    if dtype is torch.float16 and device.type != "cuda":
        return torch.bfloat16
    return dtype


class StepTimer:
    """Wall time per phase of a step (synchronising CUDA so the numbers mean something); for benchmarks."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: dict[str, float] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def section(self, name: str):
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds


class SSLMetaArch(nn.Module):
    def __init__(self, cfg: Config, device: torch.device, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.device = device
        self.config = backbone_config(cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the same initial weights in every process
            student_backbone = build_vit(self.config)
            rates = drop_path_rates(self.config.depth, self.config.drop_path_rate, bool(cfg.student.drop_path_uniform))
            for block, rate in zip(student_backbone.block_list(), rates):
                block.drop_path_rate = rate
            dim = self.config.embed_dim
            student = {"backbone": student_backbone, "dino_head": build_head(cfg.dino, dim)}
            self.do_ibot = cfg.ibot.loss_weight > 0
            self.separate_ibot_head = bool(cfg.ibot.separate_head) and self.do_ibot
            if self.separate_ibot_head:
                student["ibot_head"] = build_head(cfg.ibot, dim)
        self.student = nn.ModuleDict(student)
        teacher_backbone = build_vit(self.config.replace(drop_path_rate=0.0), init=False)
        teacher = {"backbone": teacher_backbone}
        for key in student:
            if key != "backbone":
                teacher[key] = copy.deepcopy(self.student[key])
        self.teacher = nn.ModuleDict(teacher)
        self.teacher.load_state_dict(self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        ibot_dim = cfg.ibot.head_n_prototypes if self.separate_ibot_head else cfg.dino.head_n_prototypes
        center_momentum = float(cfg.dino.center_momentum)
        self.dino_loss = DINOLoss(int(cfg.dino.head_n_prototypes), center_momentum=center_momentum)
        self.ibot_patch_loss = iBOTPatchLoss(int(ibot_dim), center_momentum=center_momentum)
        self.koleo_loss = KoLeoLoss(global_batch=bool(cfg.dino.koleo_global_batch))
        self.do_koleo = cfg.dino.koleo_loss_weight > 0
        self.to(device)
        # What the forward passes go through: the modules themselves, or their DDP wrappers (see wrap_ddp).
        self.student_forward: dict[str, nn.Module] = dict(self.student.items())

    # ------------------------------------------------------------------------------------------------ precision
    def _autocast(self, role: str, module: str):
        name = self.cfg.compute_precision[role][module].mixed_precision.param_dtype
        dtype = autocast_dtype(name, self.device)
        if dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    # ---------------------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def teacher_targets(self, batch: dict, teacher_temp: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(DINO targets (2, B, K) for student crops [global 1, global 2], iBOT targets (M, K) or None)."""
        global_crops = batch["global_crops"]
        n_crops = 2
        with self._autocast("teacher", "backbone"):
            out = self.teacher["backbone"](global_crops, is_training=True)  # through __call__: FSDP hooks run
        cls = out["x_norm_clstoken"].chunk(n_crops)
        cls = torch.cat((cls[1], cls[0]))  # crop A's target is crop B's teacher output, and vice versa
        n_cls = cls.shape[0]
        masked = None
        if self.do_ibot:
            patches = out["x_norm_patchtokens"].flatten(0, 1)
            masked = patches.index_select(0, batch["mask_indices"])
        if self.do_ibot and not self.separate_ibot_head:
            with self._autocast("teacher", "dino_head"):
                logits = self.teacher["dino_head"](torch.cat((cls, masked))).float()
            cls_logits, patch_logits = logits[:n_cls], logits[n_cls:]
        else:
            with self._autocast("teacher", "dino_head"):
                cls_logits = self.teacher["dino_head"](cls).float()
            patch_logits = None
            if self.do_ibot:
                with self._autocast("teacher", "ibot_head"):
                    patch_logits = self.teacher["ibot_head"](masked).float()
        if self.cfg.train.centering == "centering":
            dino_targets = self.dino_loss.softmax_center_teacher(cls_logits, teacher_temp)
            self.dino_loss.update_center(cls_logits)
            ibot_targets = None
            if self.do_ibot:
                ibot_targets = self.ibot_patch_loss.softmax_center_teacher(patch_logits, teacher_temp)
                self.ibot_patch_loss.update_center(patch_logits)
        else:
            dino_targets = self.dino_loss.sinkhorn_knopp_teacher(cls_logits, teacher_temp)
            ibot_targets = (self.ibot_patch_loss.sinkhorn_knopp_teacher(patch_logits, teacher_temp)
                            if self.do_ibot else None)
        return dino_targets.view(n_crops, -1, dino_targets.shape[-1]), ibot_targets

    def forward_backward(self, batch: dict, teacher_temp: float, scaler=None, timer: StepTimer | None = None,
                         backward: bool = True) -> dict[str, torch.Tensor]:
        """Losses of one step (detached, for logging) after back-propagating their weighted sum into the student, and
        the spread of the teacher's targets (``losses.target_statistics``)."""
        section = timer.section if timer is not None else (lambda name: contextlib.nullcontext())
        cfg = self.cfg
        global_crops, local_crops = batch["global_crops"], batch["local_crops"]
        n_local = cfg.crops.local_crops_number if local_crops is not None else 0
        n_terms = 2 * n_local + 2  # (student crop, teacher crop) pairs: locals x 2 + each global with the other

        with section("teacher"):
            dino_targets, ibot_targets = self.teacher_targets(batch, teacher_temp)
            self._reshard_teacher()

        with section("student_forward"):
            crops, masks = [global_crops], [batch["masks"]]
            if n_local:
                crops.append(local_crops)
                masks.append(None)
            with self._autocast("student", "backbone"):
                outputs = self.student_forward["backbone"](crops, masks=masks, is_training=True)
            global_out = outputs[0]
            local_cls = outputs[1]["x_norm_clstoken"] if n_local else None
            global_cls = global_out["x_norm_clstoken"]
            masked_patches = None
            if self.do_ibot:
                masked_patches = global_out["x_norm_patchtokens"].flatten(0, 1).index_select(0, batch["mask_indices"])

        with section("heads_losses"):
            pieces = ([local_cls] if n_local else []) + [global_cls]
            if self.do_ibot and not self.separate_ibot_head:
                pieces.append(masked_patches)
            sizes = [p.shape[0] for p in pieces]
            with self._autocast("student", "dino_head"):
                head_out = self.student_forward["dino_head"](torch.cat(pieces)).float()
            head_out = list(head_out.split(sizes))
            local_logits = head_out.pop(0) if n_local else None
            global_logits = head_out.pop(0)
            patch_logits = None
            if self.do_ibot:
                if self.separate_ibot_head:
                    with self._autocast("student", "ibot_head"):
                        patch_logits = self.student_forward["ibot_head"](masked_patches).float()
                else:
                    patch_logits = head_out.pop(0)

            losses: dict[str, torch.Tensor] = {}
            total = global_logits.new_zeros(())
            if n_local:
                local_loss = self.dino_loss(local_logits.chunk(n_local), list(dino_targets)) / n_terms
                losses["dino_local_crops_loss"] = local_loss
                total = total + cfg.dino.loss_weight * local_loss
            # both global crops at once against the swapped targets: one term per crop, hence the factor 2
            global_loss = self.dino_loss([global_logits], [dino_targets.flatten(0, 1)]) * 2 / n_terms
            losses["dino_global_crops_loss"] = global_loss
            total = total + cfg.dino.loss_weight * global_loss
            if self.do_koleo:
                koleo = cfg.dino.koleo_loss_weight * sum(self.koleo_loss(p) for p in global_cls.chunk(2))
                losses["koleo_loss"] = koleo / 2
                total = total + koleo
            if self.do_ibot:
                ibot = self.ibot_patch_loss(patch_logits, ibot_targets, batch["masks_weight"],
                                            n_images=batch["masks"].shape[0])
                losses["ibot_loss"] = ibot / 2
                total = total + cfg.ibot.loss_weight * ibot
            losses["total_loss"] = total
            losses.update(target_statistics(dino_targets))  # for the log only: collapse shows here first

        if backward:
            if timer is None:
                (scaler.scale(total) if scaler is not None else total).backward()
            else:
                backbone_outputs = [t for t in (local_cls, global_cls, masked_patches) if t is not None]
                self._timed_backward(total, scaler, timer, backbone_outputs)
        return {k: v.detach() for k, v in losses.items()}

    @staticmethod
    def _timed_backward(total: torch.Tensor, scaler, timer: StepTimer, backbone_outputs: list[torch.Tensor]) -> None:
        """Backward split at the moment the gradient reaches the backbone outputs: before it, the heads' and
        losses' backward; after it, the backbone's."""
        reached = {"time": None, "pending": sum(t.requires_grad for t in backbone_outputs)}

        def hook(grad):
            reached["pending"] -= 1
            if reached["pending"] == 0:
                timer.sync()
                reached["time"] = time.perf_counter()
            return grad

        for t in backbone_outputs:
            if t.requires_grad:
                t.register_hook(hook)
        timer.sync()
        start = time.perf_counter()
        (scaler.scale(total) if scaler is not None else total).backward()
        timer.sync()
        end = time.perf_counter()
        middle = reached["time"] if reached["time"] is not None else start
        timer.add("heads_losses", middle - start)
        timer.add("student_backward", end - middle)

    def _reshard_teacher(self) -> None:
        """Under FSDP with SHARD_GRAD_OP the teacher's gathered parameters would stay gathered after its forward (no
        backward frees them): free them now, as DINOv2 does, so memory and the EMA see the shards."""
        for module in self.teacher.modules():
            reshard = getattr(module, "reshard", None)
            if callable(reshard) and type(module).__name__.startswith("FSDP"):
                reshard()

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- m * teacher + (1 - m) * student, parameter by parameter (local shards under FSDP)."""
        student, teacher = [], []
        for key in self.student:
            for ps, pt in zip(self.student[key].parameters(), self.teacher[key].parameters()):
                student.append(_local(ps))
                teacher.append(_local(pt))
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, student, alpha=1 - momentum)


def _local(t: torch.Tensor) -> torch.Tensor:
    to_local: Callable | None = getattr(t, "to_local", None)
    return to_local() if to_local is not None else t
