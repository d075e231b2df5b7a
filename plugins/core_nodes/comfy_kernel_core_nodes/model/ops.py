"""Layers whose stored weights may have a different dtype than the computation.

Text encoders keep their weights in fp16 to halve their memory while every
matmul runs in the dtype of the activations (fp32 on the CPU); these layers cast
the weights on the fly instead of converting the whole model up front.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _cast(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    if t is None:
        return None
    return t.to(device=like.device, dtype=like.dtype)


class CastLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _cast(self.weight, x), _cast(self.bias, x))


class CastLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, _cast(self.weight, x), _cast(self.bias, x), self.eps)


class CastEmbedding(nn.Embedding):
    """Embedding lookup returning rows in `dtype` (the stored table may be fp16)."""

    def forward(self, ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:  # type: ignore[override]
        return F.embedding(ids.to(self.weight.device), self.weight).to(dtype)
