"""LTX-2's text connectors: a small 1-d transformer over the prompt's features and learned register tokens.

The prompt's tokens are followed by learned registers up to a multiple of
128 tokens (at least 1024), then go through blocks of parameter-free RMS
pre-norms, self-attention with RMS-normed queries and keys (ComfyUI's 1e-5
epsilon) and split-half rotary positions over [0, 4096) mapped onto [-1, 1),
and a tanh-GELU feed-forward; a final RMS norm closes. LTX-2's two connectors
(3840 wide, heads of 128, two blocks) run on the text encoder's side; LTX-2.3
keeps deeper, per-stream ones (video 4096 wide, audio 2048, 32 heads each)
with per-head attention gates inside the diffusion model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from .layers import GELUProj, head_gates

CONNECTOR_HEAD_DIM = 128
CONNECTOR_MIN_TOKENS = 1024
CONNECTOR_MAX_POSITION = 4096.0
CONNECTOR_THETA = 10000.0
CONNECTORS = ("video_embeddings_connector", "audio_embeddings_connector")


def rms(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def split_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding turning channel i with channel i + half of each head ([B, H, N, D]; cos/sin [H, N, D/2])."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


class ConnectorAttention(nn.Module):
    def __init__(self, ops: Any, dim: int, heads: int, gated: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = ops.Linear(dim, dim)
        self.to_k = ops.Linear(dim, dim)
        self.to_v = ops.Linear(dim, dim)
        self.q_norm = ops.RMSNorm(dim, eps=1e-5)
        self.k_norm = ops.RMSNorm(dim, eps=1e-5)
        self.to_out = nn.ModuleList([ops.Linear(dim, dim)])
        self.to_gate_logits = ops.Linear(dim, heads) if gated else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = split_rotate(self.q_norm(self.to_q(x)).view(b, n, self.heads, -1).transpose(1, 2), cos, sin)
        k = split_rotate(self.k_norm(self.to_k(x)).view(b, n, self.heads, -1).transpose(1, 2), cos, sin)
        v = self.to_v(x).view(b, n, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out[0](head_gates(self.to_gate_logits, x, out, self.heads))


class ConnectorFeedForward(nn.Module):
    def __init__(self, ops: Any, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([GELUProj(ops, dim, 4 * dim), nn.Dropout(0.0), ops.Linear(4 * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class ConnectorBlock(nn.Module):
    def __init__(self, ops: Any, dim: int, heads: int, gated: bool = False) -> None:
        super().__init__()
        self.attn1 = ConnectorAttention(ops, dim, heads, gated)
        self.ff = ConnectorFeedForward(ops, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(rms(x), cos, sin)
        return x + self.ff(rms(x))


class Connector(nn.Module):
    """A 1-d transformer over the text tokens and learned registers (see the module's docstring); heads of 128
    unless given."""

    def __init__(self, ops: Any, dim: int, layers: int, registers: int, heads: int = 0, gated: bool = False) -> None:
        super().__init__()
        self.heads = heads or dim // CONNECTOR_HEAD_DIM
        self.transformer_1d_blocks = nn.ModuleList(ConnectorBlock(ops, dim, self.heads, gated)
                                                   for _ in range(layers))
        self.learnable_registers = nn.Parameter(torch.empty(registers, dim))

    def rotary(self, tokens: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos / sin [heads, tokens, head_dim / 2]: frequencies spread geometrically from 1 to theta (times
        pi / 2) over half the width, at positions mapped from [0, 4096) onto [-1, 1)."""
        dim = self.learnable_registers.shape[1]
        steps = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64)
        grid = (torch.pow(torch.tensor(CONNECTOR_THETA, dtype=torch.float64), steps) * math.pi / 2).float()
        position = torch.arange(tokens, dtype=torch.float32) / CONNECTOR_MAX_POSITION * 2 - 1
        freqs = (position[:, None] * grid[None]).view(tokens, self.heads, -1).transpose(0, 1)
        return freqs.cos().to(device=device, dtype=dtype), freqs.sin().to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        registers = _ops.cast_weight(self, "learnable_registers", x)
        count = registers.shape[0]
        total = math.ceil(max(CONNECTOR_MIN_TOKENS, x.shape[1]) / count) * count
        filler = registers.repeat(total // count, 1)[x.shape[1]:]
        x = torch.cat([x, filler[None].expand(x.shape[0], -1, -1)], dim=1)
        cos, sin = self.rotary(total, x.device, x.dtype)
        for block in self.transformer_1d_blocks:
            x = block(x, cos, sin)
        return rms(x)
