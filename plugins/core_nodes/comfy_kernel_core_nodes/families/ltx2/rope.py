"""LTX-2's rotary positions: fractional coordinates turned into angles, applied interleaved or split per head.

Each axis's coordinate (token middles: seconds, pixel rows, pixel columns, or
seconds alone) is divided by its maximum, mapped onto [-1, 1] and multiplied
by frequencies spread geometrically from 1 to theta (times pi / 2) over the
axis's share of half the width; leftover channels at the front turn by zero.
ComfyUI's checkpoints name the layout in their ``config`` metadata
(``rope_type``): "interleaved" turns channel pairs (2i, 2i + 1) over the whole
width; "split" (the released LTX-2 / 2.3 files) turns channel i with channel
i + d/2 inside each head of width d.
"""

from __future__ import annotations

import math

import torch


def rope_freqs(coords: torch.Tensor, maxima: tuple[float, ...], dim: int, theta: float, split_heads: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates [B, axes, N] -> (cos, sin): [B, N, dim] interleaved, or [B, N, heads, dim / heads / 2] split
    across ``split_heads`` heads."""
    axes = coords.shape[1]
    grid = torch.stack([coords[:, i] / maxima[i] for i in range(axes)], dim=-1)
    steps = dim // (2 * axes)
    powers = torch.pow(theta, torch.linspace(0.0, 1.0, steps, dtype=torch.float64, device=coords.device))
    base = (powers * math.pi / 2.0).to(torch.float32)
    freqs = ((grid.unsqueeze(-1) * 2 - 1) * base).transpose(-1, -2).flatten(2)
    cos, sin = freqs.cos(), freqs.sin()
    if not split_heads:
        cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
    pad = (dim if not split_heads else dim // 2) - cos.shape[-1]
    if pad:
        cos = torch.cat([torch.ones_like(cos[..., :pad]), cos], dim=-1)
        sin = torch.cat([torch.zeros_like(sin[..., :pad]), sin], dim=-1)
    if split_heads:
        cos, sin = cos.unflatten(-1, (split_heads, -1)), sin.unflatten(-1, (split_heads, -1))
    return cos, sin


def rotate(x: torch.Tensor, freqs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``x`` [B, N, width] turned by :func:`rope_freqs`' angles, in fp32, in either layout."""
    cos, sin = freqs
    if cos.ndim == 4:
        halves = x.float().unflatten(-1, (cos.shape[2], 2, -1))
        first, second = halves[..., 0, :], halves[..., 1, :]
        out = torch.stack([first * cos - second * sin, second * cos + first * sin], dim=-2)
        return out.flatten(-3).to(x.dtype)
    pairs = x.unflatten(-1, (-1, 2))
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (x.float() * cos + turned.float() * sin).to(x.dtype)
