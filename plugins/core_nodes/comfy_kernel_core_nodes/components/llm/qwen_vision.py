"""Qwen2.5-VL's vision tower: images -> embeddings that replace ``<|image_pad|>`` tokens in the LLM.

An image is resized so both sides are multiples of 28 (14-pixel patches merged
2x2), normalised with CLIP's mean and std, cut into 2x14x14 patches (the
frame is repeated for the temporal patch), embedded, and run through a ViT
whose blocks attend inside 112-pixel windows except for every 8th block
(full attention). A merger turns each 2x2 group of patches into one token of
the LLM's width. Keys follow ComfyUI's text encoder files (``visual.`` prefix:
``patch_embed.proj``, ``blocks.N.attn.qkv``, ``merger.mlp.0`` ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int = 1280
    output_size: int = 3584
    intermediate_size: int = 3420
    num_heads: int = 16
    num_layers: int = 32
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    window_size: int = 112
    full_attention_blocks: tuple[int, ...] = (7, 15, 23, 31)


QWEN25_VL_VISION = VisionConfig()


def image_patches(image: torch.Tensor, config: VisionConfig = QWEN25_VL_VISION, min_pixels: int = 3136,
                  max_pixels: int = 12845056) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [B, H, W, C] in [0, 1] (the first image) -> (patches [N, 3*2*14*14], grid [[1, gh, gw]])."""
    img = image[0, ..., :3].movedim(-1, 0).float()
    height, width = img.shape[-2:]
    factor = config.patch_size * config.merge_size
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    img = F.interpolate(img[None], size=(h_bar, w_bar), mode="bilinear", align_corners=False)[0]
    mean = torch.tensor(CLIP_MEAN, dtype=img.dtype, device=img.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=img.dtype, device=img.device).view(3, 1, 1)
    img = (img - mean) / std
    gh, gw, m, p, tp = h_bar // config.patch_size, w_bar // config.patch_size, config.merge_size, \
        config.patch_size, config.temporal_patch_size
    frames = img.unsqueeze(0).expand(tp, -1, -1, -1)  # the still image fills the temporal patch
    patches = frames.reshape(tp, 3, gh // m, m, p, gw // m, m, p).permute(2, 5, 3, 6, 1, 0, 4, 7)
    grid = torch.tensor([[1, gh, gw]], dtype=torch.long)
    return patches.reshape(gh * gw, 3 * tp * p * p), grid


class PatchEmbed(nn.Module):
    def __init__(self, c: VisionConfig, ops: Any) -> None:
        super().__init__()
        self.config = c
        k = (c.temporal_patch_size, c.patch_size, c.patch_size)
        self.proj = ops.Conv3d(3, c.hidden_size, kernel_size=k, stride=k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        x = x.view(-1, 3, c.temporal_patch_size, c.patch_size, c.patch_size)
        return self.proj(x).view(-1, c.hidden_size)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class VisionAttention(nn.Module):
    def __init__(self, c: VisionConfig, ops: Any) -> None:
        super().__init__()
        self.heads = c.num_heads
        self.qkv = ops.Linear(c.hidden_size, 3 * c.hidden_size, bias=True)
        self.proj = ops.Linear(c.hidden_size, c.hidden_size, bias=True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bounds: list[int]) -> torch.Tensor:
        n, dim = x.shape
        q, k, v = self.qkv(x).view(n, 3, self.heads, dim // self.heads).unbind(1)  # [n, heads, d]
        cos, sin = cos[:, None].float(), sin[:, None].float()
        q = (q.float() * cos + _rotate_half(q.float()) * sin).to(v.dtype)
        k = (k.float() * cos + _rotate_half(k.float()) * sin).to(v.dtype)
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # [heads, n, d]
        out = torch.cat([F.scaled_dot_product_attention(q[:, a:b], k[:, a:b], v[:, a:b])
                         for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a], dim=1)
        return self.proj(out.transpose(0, 1).reshape(n, dim))


class VisionMLP(nn.Module):
    def __init__(self, c: VisionConfig, ops: Any) -> None:
        super().__init__()
        self.gate_proj = ops.Linear(c.hidden_size, c.intermediate_size, bias=True)
        self.up_proj = ops.Linear(c.hidden_size, c.intermediate_size, bias=True)
        self.down_proj = ops.Linear(c.intermediate_size, c.hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class VisionBlock(nn.Module):
    def __init__(self, c: VisionConfig, ops: Any) -> None:
        super().__init__()
        self.norm1 = ops.RMSNorm(c.hidden_size, eps=1e-6)
        self.norm2 = ops.RMSNorm(c.hidden_size, eps=1e-6)
        self.attn = VisionAttention(c, ops)
        self.mlp = VisionMLP(c, ops)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bounds: list[int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, bounds)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    def __init__(self, c: VisionConfig, ops: Any) -> None:
        super().__init__()
        self.width = c.hidden_size * c.merge_size ** 2
        self.ln_q = ops.RMSNorm(c.hidden_size, eps=1e-6)
        self.mlp = nn.Sequential(ops.Linear(self.width, self.width), nn.GELU(), ops.Linear(self.width, c.output_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_q(x).reshape(-1, self.width))


class VisionTransformer(nn.Module):
    """The ViT with windowed attention; ``forward(patches, grid)`` -> [tokens, output_size] in raster order."""

    def __init__(self, config: VisionConfig = QWEN25_VL_VISION, ops: Any = _ops.plain) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config, ops)
        self.blocks = nn.ModuleList([VisionBlock(config, ops) for _ in range(config.num_layers)])
        self.merger = PatchMerger(config, ops)

    def _windows(self, grid: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Merged-token order grouped by window, and the window boundaries in patches."""
        c = self.config
        size = c.window_size // c.merge_size // c.patch_size
        order, bounds, base = [], [0], 0
        for t, h, w in grid.tolist():
            mh, mw = h // c.merge_size, w // c.merge_size
            index = torch.arange(t * mh * mw).reshape(t, mh, mw)
            ph, pw = size - mh % size, size - mw % size
            padded = F.pad(index, (0, pw, 0, ph), value=-1)
            nh, nw = (mh + ph) // size, (mw + pw) // size
            padded = padded.reshape(t, nh, size, nw, size).permute(0, 1, 3, 2, 4).reshape(t, nh * nw, size, size)
            counts = (padded >= 0).sum((2, 3)).reshape(-1)
            flat = padded.reshape(-1)
            order.append(flat[flat >= 0] + base)
            for count in counts.tolist():
                if count:
                    bounds.append(bounds[-1] + count * c.merge_size ** 2)
            base += t * mh * mw
        return torch.cat(order), bounds

    def _rotary(self, grid: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Per-patch (row, column) rotary angles, patches in merge-group order."""
        c, m = self.config, self.config.merge_size
        ids = []
        for t, h, w in grid.tolist():
            rows = torch.arange(h).unsqueeze(1).expand(h, w).reshape(h // m, m, w // m, m).permute(0, 2, 1, 3)
            cols = torch.arange(w).unsqueeze(0).expand(h, w).reshape(h // m, m, w // m, m).permute(0, 2, 1, 3)
            ids.append(torch.stack([rows.flatten(), cols.flatten()], dim=-1).repeat(t, 1))
        ids = torch.cat(ids).to(device)
        dim = c.hidden_size // c.num_heads // 2  # half the head is rotated by rows, half by columns
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim))
        table = torch.outer(torch.arange(int(grid[:, 1:].max()), device=device, dtype=torch.float), inv_freq)
        return table[ids].flatten(1)

    def forward(self, patches: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        c = self.config
        unit = c.merge_size ** 2
        x = self.patch_embed(patches)
        n = x.shape[0]
        order, window_bounds = self._windows(grid)
        x = x.reshape(n // unit, unit, -1)[order].reshape(n, -1)
        angles = self._rotary(grid, x.device).reshape(n // unit, unit, -1)[order].reshape(n, -1)
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos(), angles.sin()
        full_bounds = [0]
        for t, h, w in grid.tolist():
            for _ in range(t):
                full_bounds.append(full_bounds[-1] + h * w)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, full_bounds if i in c.full_attention_blocks else window_bounds)
        x = self.merger(x)
        return x[torch.argsort(order)]
