"""Attention as ComfyUI's patches call it: ``optimized_attention(q, k, v, heads)``.

q, k and v arrive projected and flat, ``[B, tokens, heads * dim_head]`` (or
already split, ``[B, heads, tokens, dim_head]`` with ``skip_reshape``); the
result is flat again. PyTorch's scaled_dot_product_attention picks the best
kernel for the device (flash / memory-efficient on CUDA, a fused kernel on
the CPU). Attention patches and replacements (SAG, PAG, HyperTile, IPAdapter
...) use these functions, so every family's blocks call them too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


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
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(b, -1, heads * dim_head)


def optimized_attention_for_device(device: Any = None, mask: bool = False, small_input: bool = False) -> Any:
    return optimized_attention


attention_pytorch = optimized_attention
optimized_attention_masked = optimized_attention
