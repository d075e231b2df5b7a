"""Attention as ComfyUI's patches call it: ``optimized_attention(q, k, v, heads)``.

q, k and v arrive projected and flat, ``[B, tokens, heads * dim_head]`` (or
already split, ``[B, heads, tokens, dim_head]`` with ``skip_reshape``); the
result is flat again. PyTorch's scaled_dot_product_attention picks the best
kernel for the device (flash / memory-efficient on CUDA, a fused kernel on
the CPU). On the CPU, small attentions (a few dozen tokens a side, as in the
lowest UNet levels or any latent under about 128x128 pixels) run as two plain
matrix products around a softmax instead: the fused kernel's per-call set-up
and thread hand-off cost more than the work there (4x on two threads).
Attention patches and replacements (SAG, PAG, HyperTile, IPAdapter
...) use these functions, so every family's blocks call them too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

#: q tokens x k tokens up to which CPU attention runs as plain matrix products
SMALL_ATTENTION = 8192


def _small_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v for [B, heads, tokens, dim] inputs, as SDPA computes it."""
    scores = torch.matmul(q, k.transpose(-2, -1)).mul_(q.shape[-1] ** -0.5)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    return torch.matmul(scores.softmax(dim=-1), v)


def optimized_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                        mask: torch.Tensor | None = None, attn_precision: Any = None, skip_reshape: bool = False,
                        skip_output_reshape: bool = False, **kwargs: Any) -> torch.Tensor:
    if skip_reshape:
        b, _, _, dim_head = q.shape
    else:
        b, _, inner = q.shape
        dim_head = inner // heads
        q, k, v = (t.view(b, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
    if q.device.type == "cpu" and q.dtype == torch.float32 and q.shape[-2] * k.shape[-2] <= SMALL_ATTENTION:
        out = _small_attention(q, k, v, mask)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(b, -1, heads * dim_head)


def optimized_attention_for_device(device: Any = None, mask: bool = False, small_input: bool = False) -> Any:
    return optimized_attention


attention_pytorch = optimized_attention
optimized_attention_masked = optimized_attention
