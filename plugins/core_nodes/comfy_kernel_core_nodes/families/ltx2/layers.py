"""Layers the LTX-2 transformer and its text connectors share: RMS norms and the tanh-GELU feed-forward."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops


class RMSNorm(nn.Module):
    """RMS norm over the last dimension, with a learned scale when ``affine``."""

    def __init__(self, dim: int, affine: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = _ops.cast_weight(self, "weight", x) if hasattr(self, "weight") else None
        return F.rms_norm(x, (x.shape[-1],), weight, self.eps)


def rms(x: torch.Tensor) -> torch.Tensor:
    """The parameter-free RMS norm every block uses before its sublayers."""
    return F.rms_norm(x, (x.shape[-1],), None, 1e-6)


class GELUProj(nn.Module):
    def __init__(self, ops: Any, dim: int, inner: int, bias: bool = True) -> None:
        super().__init__()
        self.proj = ops.Linear(dim, inner, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """Four times as wide inside; ``bias`` False for LTX-2.5's video stream."""

    def __init__(self, ops: Any, dim: int, mult: int = 4, bias: bool = True) -> None:
        super().__init__()
        self.net = nn.ModuleList([GELUProj(ops, dim, dim * mult, bias), nn.Dropout(0.0),
                                  ops.Linear(dim * mult, dim, bias=bias)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


def head_gates(gate: nn.Module | None, x: torch.Tensor, out: torch.Tensor, heads: int) -> torch.Tensor:
    """LTX-2.3's gated attention: each head's output [B, N, heads * d] scaled by 2 sigmoid(logit), the logits a
    linear map of the attention's (query-side) input ``x``; unchanged without a gate."""
    if gate is None:
        return out
    gates = 2.0 * torch.sigmoid(gate(x))
    return (out.unflatten(-1, (heads, -1)) * gates.unsqueeze(-1).to(out.dtype)).flatten(-2)
