"""N-axis rotary position embedding as the Flux-style DiTs use it (Qwen-Image, Lumina 2, Z-Image).

Each token has a position per axis (frame, row, column, or a text index);
the head dimension is split into per-axis slices whose consecutive pairs
rotate by position x frequency. The tables are 2x2 rotation matrices so one
multiply-add applies them.
"""

from __future__ import annotations

import torch


def rope_angles(ids: torch.Tensor, axes_dims: tuple[int, ...] | list[int], theta: float = 10000.0) -> torch.Tensor:
    """Rotation matrices [B, N, head_dim/2, 2, 2] for position ids [B, N, axes]."""
    parts = []
    for axis, dim in enumerate(axes_dims):
        scale = torch.arange(0, dim, 2, dtype=torch.float64, device=ids.device) / dim
        omega = 1.0 / (theta ** scale)
        angle = ids[..., axis].to(torch.float64)[..., None] * omega
        cos, sin = torch.cos(angle), torch.sin(angle)
        parts.append(torch.stack([cos, -sin, sin, cos], dim=-1).reshape(*angle.shape, 2, 2))
    return torch.cat(parts, dim=-3).float()


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of ``x`` [B, N, heads, D] by ``rope`` [B, N, 1, D/2, 2, 2] (computed in fp32)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = rope[..., 0] * pairs[..., 0] + rope[..., 1] * pairs[..., 1]
    return out.reshape(x.shape).to(x.dtype)
