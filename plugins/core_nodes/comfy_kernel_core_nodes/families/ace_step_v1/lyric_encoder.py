"""ACE-Step 1.0's lyric encoder: a Conformer-style stack over the lyric token embeddings.

The released model uses CosyVoice's encoder configuration: a linear input
embedding with layer norm, sinusoidal *relative* positions (Transformer-XL
attention with learned ``pos_bias_u`` / ``pos_bias_v``), pre-norm layers of
self-attention and a SiLU feed-forward, a final layer norm. The convolution
and macaron feed-forward modules a Conformer can have are switched off there,
so they are not built. Full-context attention: the only mask is the optional
padding mask of the lyric tokens. Weight names follow ComfyUI's
``comfy/ldm/ace/lyric_encoder.py`` (``embed.out.0``, ``encoders.N.self_attn...``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-5


def relative_positions(length: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[1, 2 * length - 1, width] sinusoids of the relative offsets ``length - 1`` down to ``-(length - 1)``.

    Sine in the even channels, cosine in the odd ones (ESPnet's layout), computed
    in float32 and then rounded to ``dtype`` as the reference does.
    """
    offsets = torch.arange(length - 1, -length, -1, dtype=torch.float32, device=device)[:, None]
    inv_freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32, device=device)
                         * -(math.log(10000.0) / width))
    angles = offsets * inv_freq
    table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)
    return table[None].to(dtype)


def shift_relative(scores: torch.Tensor) -> torch.Tensor:
    """Per-offset scores [..., T, 2T - 1] -> per-key scores [..., T, T].

    Column ``k`` of ``scores`` belongs to offset ``T - 1 - k``; query ``i`` and
    key ``j`` are ``i - j`` apart, so they read column ``T - 1 - i + j``.
    """
    length = scores.shape[-2]
    rows = torch.arange(length, device=scores.device)
    index = (length - 1 - rows)[:, None] + rows[None, :]
    return scores.gather(-1, index.expand(*scores.shape[:-1], length))


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions.

    The score of query ``i`` and key ``j`` is ``(q_i + u) . k_j + (q_i + v) . P(i - j)``
    over ``sqrt(d)``, where ``P`` projects the relative sinusoids (``linear_pos``).
    """

    def __init__(self, width: int, heads: int, ops: Any) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.linear_q = ops.Linear(width, width)
        self.linear_k = ops.Linear(width, width)
        self.linear_v = ops.Linear(width, width)
        self.linear_out = ops.Linear(width, width)
        self.linear_pos = ops.Linear(width, width, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.empty(heads, self.head_dim))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` [B, T, width], ``positions`` [1, 2T - 1, width], ``key_mask`` [B, T] (True = a real token)."""
        b = x.shape[0]
        q, k, v = self._split(self.linear_q(x)), self._split(self.linear_k(x)), self._split(self.linear_v(x))
        p = self._split(self.linear_pos(positions))
        u = self.pos_bias_u.to(device=q.device, dtype=q.dtype)[:, None]
        w = self.pos_bias_v.to(device=q.device, dtype=q.dtype)[:, None]
        content = torch.matmul(q + u, k.transpose(-2, -1))
        position = shift_relative(torch.matmul(q + w, p.transpose(-2, -1)))
        scores = (content + position) / math.sqrt(self.head_dim)
        if key_mask is not None:
            hidden = ~key_mask[:, None, None, :]
            # a row with every key hidden softmaxes to NaN; it is zeroed, as in the reference
            probs = scores.masked_fill(hidden, -float("inf")).softmax(dim=-1).masked_fill(hidden, 0.0)
        else:
            probs = scores.softmax(dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, -1, self.heads * self.head_dim)
        return self.linear_out(out)


class FeedForward(nn.Module):
    """Position-wise ``w_2(silu(w_1(x)))``."""

    def __init__(self, width: int, inner: int, ops: Any) -> None:
        super().__init__()
        self.w_1 = ops.Linear(width, inner)
        self.w_2 = ops.Linear(inner, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Pre-norm residual self-attention, then pre-norm residual feed-forward."""

    def __init__(self, width: int, heads: int, inner: int, ops: Any) -> None:
        super().__init__()
        self.self_attn = RelPositionAttention(width, heads, ops)
        self.feed_forward = FeedForward(width, inner, ops)
        self.norm_mha = ops.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.norm_ff = ops.LayerNorm(width, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), positions, key_mask)
        return x + self.feed_forward(self.norm_ff(x))


class LinearEmbed(nn.Module):
    """The input layer: Linear + LayerNorm (``out.0``, ``out.1``), no subsampling."""

    def __init__(self, in_width: int, width: int, ops: Any) -> None:
        super().__init__()
        self.out = nn.Sequential(ops.Linear(in_width, width), ops.LayerNorm(width, eps=LAYER_NORM_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x)


class LyricConformer(nn.Module):
    """Lyric token embeddings [B, T, in_width] -> encoded lyrics [B, T, width] (ComfyUI's ``ConformerEncoder``)."""

    def __init__(self, in_width: int, width: int, heads: int, inner: int, layers: int, ops: Any) -> None:
        super().__init__()
        self.width = width
        self.embed = LinearEmbed(in_width, width, ops)
        self.encoders = nn.ModuleList([ConformerLayer(width, heads, inner, ops) for _ in range(layers)])
        self.after_norm = ops.LayerNorm(width, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` [B, T]: nonzero for real tokens; None attends to every token."""
        x = self.embed(x) * math.sqrt(self.width)
        positions = relative_positions(x.shape[1], self.width, x.device, x.dtype)
        key_mask = mask.to(device=x.device, dtype=torch.bool) if mask is not None else None
        for layer in self.encoders:
            x = layer(x, positions, key_mask)
        return self.after_norm(x)
