"""DINOv2-compatible vision transformer.

The module tree mirrors DINOv2 so that ``state_dict()`` keys are the published ones: with ``block_chunks > 0`` the
blocks sit in chunks (``blocks.{chunk}.{global_index}``, earlier indices padded with ``Identity``), each chunk being
one FSDP unit in pretraining; with ``block_chunks = 0`` they are flat (``blocks.{i}``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .block import Block
from .config import ViTConfig
from .patch_embed import PatchEmbed


class BlockChunk(nn.ModuleList):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = block(x)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        c = self.config = config
        self.patch_size = c.patch_size
        self.embed_dim = c.embed_dim
        self.num_register_tokens = c.num_register_tokens
        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, c.grid_size**2 + 1, c.embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, c.num_register_tokens, c.embed_dim)) if c.num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, c.embed_dim))
        blocks = [
            Block(c.embed_dim, c.num_heads, c.ffn_hidden, ffn_layer=c.ffn_layer, qkv_bias=c.qkv_bias,
                  proj_bias=c.proj_bias, ffn_bias=c.ffn_bias, init_values=c.init_values,
                  drop_path_rate=c.drop_path_rate, norm_eps=c.norm_eps)
            for _ in range(c.depth)
        ]
        if c.block_chunks > 0:
            size = c.depth // c.block_chunks
            self.blocks = nn.ModuleList(
                BlockChunk([nn.Identity()] * start + blocks[start:start + size]) for start in range(0, c.depth, size)
            )
        else:
            self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.head = nn.Identity()

    # ----------------------------------------------------------------------------------------------- structure
    def block_list(self) -> list[Block]:
        """The transformer blocks in order, whatever the chunking."""
        if self.config.block_chunks > 0:
            return [b for chunk in self.blocks for b in chunk if isinstance(b, Block)]
        return list(self.blocks)

    def init_weights(self) -> "VisionTransformer":
        """Random initialisation for training from scratch (DINOv2's: truncated normal 0.02, tiny tokens)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        return self

    # ------------------------------------------------------------------------------------------------ tokens
    def interpolate_pos_encoding(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Position embeddings for an image of ``height`` x ``width`` pixels (DINOv2's rule, offset included).

        PyTorch uses an explicit ``scale_factor`` (not the output size) to map output to input coordinates, so the
        offset changes the sampling positions slightly; reproducing it exactly is what makes features match.
        """
        dtype = x.dtype
        n_patch = x.shape[1] - 1
        n_table = self.pos_embed.shape[1] - 1
        if n_patch == n_table and height == width:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        rows, cols = height // self.patch_size, width // self.patch_size
        side = int(math.sqrt(n_table))
        grid = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        offset = self.config.interpolate_offset
        if offset:
            kwargs = {"scale_factor": ((rows + offset) / side, (cols + offset) / side)}
        else:
            kwargs = {"size": (rows, cols)}
        grid = F.interpolate(grid, mode="bicubic", antialias=self.config.interpolate_antialias, **kwargs)
        if grid.shape[-2:] != (rows, cols):
            raise RuntimeError(f"position grid interpolated to {tuple(grid.shape[-2:])}, expected {(rows, cols)}")
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat((cls_pos, patch_pos), dim=1).to(dtype)

    def prepare_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens (masked ones replaced by the mask token), CLS, position embedding, then registers."""
        _, _, height, width = x.shape
        x = self.patch_embed(x)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, height, width)
        if self.register_tokens is not None:
            x = torch.cat((x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]), dim=1)
        return x

    # ------------------------------------------------------------------------------------------------ outputs
    def _split(self, x_prenorm: torch.Tensor, masks: torch.Tensor | None) -> dict[str, torch.Tensor | None]:
        x_norm = self.norm(x_prenorm)
        r = self.num_register_tokens
        return {
            "x_norm_clstoken": x_norm[:, 0],
            "x_norm_regtokens": x_norm[:, 1:r + 1],
            "x_norm_patchtokens": x_norm[:, r + 1:],
            "x_prenorm": x_prenorm,
            "masks": masks,
        }

    def forward_features(self, x: torch.Tensor | Sequence[torch.Tensor], masks=None):
        """Token outputs after the final norm; a list of crops (multi-crop training) gives a list of dicts."""
        if isinstance(x, (list, tuple)):
            masks = masks if masks is not None else [None] * len(x)
            return [self.forward_features(xi, mi) for xi, mi in zip(x, masks)]
        tokens = self.prepare_tokens(x, masks)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self._split(tokens, masks)

    def forward(self, x: torch.Tensor, *, is_training: bool = False, masks=None):
        """Inference: the normed CLS token, which is the CervixFM feature."""
        out = self.forward_features(x, masks)
        if is_training:
            return out
        return self.head(out["x_norm_clstoken"])

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ):
        """Patch tokens of the last ``n`` blocks (int) or of the given block indices (sequence)."""
        blocks = self.block_list()
        wanted = set(range(len(blocks) - n, len(blocks))) if isinstance(n, int) else set(n)
        if not wanted or min(wanted) < 0 or max(wanted) >= len(blocks):
            raise ValueError(f"block indices {sorted(wanted)} outside 0..{len(blocks) - 1}")
        tokens = self.prepare_tokens(x)
        outputs = []
        for i, blk in enumerate(blocks):
            tokens = blk(tokens)
            if i in wanted:
                outputs.append(tokens)
            if i >= max(wanted):
                break
        if norm:
            outputs = [self.norm(out) for out in outputs]
        class_tokens = [out[:, 0] for out in outputs]
        outputs = [out[:, 1 + self.num_register_tokens:] for out in outputs]
        if reshape:
            b, _, height, width = x.shape
            p = self.patch_size
            outputs = [o.reshape(b, height // p, width // p, -1).permute(0, 3, 1, 2).contiguous() for o in outputs]
        if return_class_token:
            return tuple(zip(outputs, class_tokens))
        return tuple(outputs)


def build_vit(config: ViTConfig, *, init: bool = True) -> VisionTransformer:
    model = VisionTransformer(config)
    return model.init_weights() if init else model
