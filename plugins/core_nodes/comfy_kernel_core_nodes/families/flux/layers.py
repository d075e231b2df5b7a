"""The building blocks of Flux-style transformers: rotary positions, modulation, double and single stream blocks.

Shared by Flux.1 (dev, schnell, Fill, Kontext) and Chroma. Names follow the
original checkpoints' keys (``img_attn.qkv``, ``img_attn.norm.query_norm.scale``,
``img_mod.lin``, ``linear1``, ``modulation.lin`` ...).

Attention runs through :func:`...model.attention.optimized_attention` on
[B, heads, tokens, dim] tensors, after the rotary embedding of the token
positions (three axes: an index, the row and the column, 16/56/56 channels of
each 128-channel head). fp16 activations are clamped to the fp16 range after
each block, as ComfyUI does.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.attention import optimized_attention


def rope(pos: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """Rotation matrices [..., n, dim/2, 2, 2] (float32) of positions ``pos`` [..., n] for one axis."""
    scale = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
    omega = 1.0 / (theta ** scale)
    angles = pos.to(torch.float64)[..., None] * omega
    cos, sin = torch.cos(angles), torch.sin(angles)
    return torch.stack([cos, -sin, sin, cos], dim=-1).reshape(*angles.shape, 2, 2).float()


def position_embedding(ids: torch.Tensor, axes_dim: tuple[int, ...], theta: float) -> torch.Tensor:
    """[B, 1, n, head_dim/2, 2, 2] rotations of the token ids [B, n, axes]."""
    return torch.cat([rope(ids[..., i], d, theta) for i, d in enumerate(axes_dim)], dim=-3).unsqueeze(1)


def apply_rope(x: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    pairs = x.to(pe.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    out = pe[..., 0] * pairs[..., 0] + pe[..., 1] * pairs[..., 1]
    return out.reshape(*x.shape).type_as(x)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pe: torch.Tensor | None,
              mask: torch.Tensor | None = None, transformer_options: dict[str, Any] | None = None) -> torch.Tensor:
    """[B, n, heads * dim] of q, k, v [B, heads, n, dim], with rotary positions when ``pe`` is given."""
    if pe is not None:
        q, k = apply_rope(q, pe).type_as(v), apply_rope(k, pe).type_as(v)
    return optimized_attention(q, k, v, q.shape[1], mask=mask, skip_reshape=True,
                               transformer_options=transformer_options or {})


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0,
                       time_factor: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] (cosines first) of ``t * time_factor``."""
    t = time_factor * t
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb.to(t.dtype) if torch.is_floating_point(t) else emb


def clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.float16:
        return torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
    return x


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden: int, ops: Any = _ops.plain, bias: bool = True) -> None:
        super().__init__()
        self.in_layer = ops.Linear(in_dim, hidden, bias=bias)
        self.out_layer = ops.Linear(hidden, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    """RMS norm with a learned ``scale`` (eps 1e-6)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = _ops.cast_weight(self, "scale", x)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * scale


class QKNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


class SelfAttention(nn.Module):
    """The projections of one stream's attention (the attention itself is joint)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, ops: Any, bias: bool = True) -> None:
        super().__init__()
        self.qkv = ops.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm = QKNorm(dim // heads)
        self.proj = ops.Linear(dim, dim, bias=bias)


class ModulationOut:
    """shift, scale, gate of one modulated sub-block."""

    def __init__(self, shift: torch.Tensor, scale: torch.Tensor, gate: torch.Tensor) -> None:
        self.shift, self.scale, self.gate = shift, scale, gate


class Modulation(nn.Module):
    def __init__(self, dim: int, double: bool, ops: Any, bias: bool = True) -> None:
        super().__init__()
        self.double = double
        self.lin = ops.Linear(dim, (6 if double else 3) * dim, bias=bias)

    def forward(self, vec: torch.Tensor) -> tuple[ModulationOut, ModulationOut | None]:
        if vec.ndim == 2:
            vec = vec[:, None, :]
        out = self.lin(F.silu(vec)).chunk(6 if self.double else 3, dim=-1)
        return ModulationOut(*out[:3]), (ModulationOut(*out[3:]) if self.double else None)


def modulate(x: torch.Tensor, mod: ModulationOut) -> torch.Tensor:
    return torch.addcmul(mod.shift, x, 1 + mod.scale)


def swiglu(x: torch.Tensor) -> torch.Tensor:
    """Flux.2's MLP activation: SiLU of the first half times the second half."""
    gate, value = x.chunk(2, dim=-1)
    return F.silu(gate) * value


def mlp(hidden: int, inner: int, ops: Any, gated: bool, bias: bool) -> nn.Sequential:
    """``<stream>_mlp``: Linear, activation, Linear (Flux.1: tanh GELU; Flux.2: SwiGLU, twice as wide in)."""
    act = _SwiGLU() if gated else nn.GELU(approximate="tanh")
    return nn.Sequential(ops.Linear(hidden, inner * (2 if gated else 1), bias=bias), act,
                         ops.Linear(inner, hidden, bias=bias))


class _SwiGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x)


def _split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, n, _ = qkv.shape
    q, k, v = qkv.view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    return q, k, v


class DoubleStreamBlock(nn.Module):
    """Image and text tokens, each with its own weights, attending jointly (text first, or image first
    with ``image_first``: HunyuanVideo's order, which its rotary table follows)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qkv_bias: bool, ops: Any = _ops.plain,
                 modulation: bool = True, gated_mlp: bool = False, bias: bool = True,
                 image_first: bool = False) -> None:
        super().__init__()
        inner = int(hidden * mlp_ratio)
        self.heads = heads
        self.image_first = image_first
        if modulation:
            self.img_mod = Modulation(hidden, True, ops)
            self.txt_mod = Modulation(hidden, True, ops)
        self.img_norm1 = ops.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.img_attn = SelfAttention(hidden, heads, qkv_bias, ops, bias)
        self.img_norm2 = ops.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.img_mlp = mlp(hidden, inner, ops, gated_mlp, bias)
        self.txt_norm1 = ops.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.txt_attn = SelfAttention(hidden, heads, qkv_bias, ops, bias)
        self.txt_norm2 = ops.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.txt_mlp = mlp(hidden, inner, ops, gated_mlp, bias)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: Any, pe: torch.Tensor | None,
                attn_mask: torch.Tensor | None = None,
                transformer_options: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``vec`` is the conditioning vector, or (Chroma) ((img_mod1, img_mod2), (txt_mod1, txt_mod2))."""
        if isinstance(vec, tuple):
            (img_mod1, img_mod2), (txt_mod1, txt_mod2) = vec
        else:
            img_mod1, img_mod2 = self.img_mod(vec)
            txt_mod1, txt_mod2 = self.txt_mod(vec)
        img_q, img_k, img_v = _split_heads(self.img_attn.qkv(modulate(self.img_norm1(img), img_mod1)), self.heads)
        img_q, img_k = self.img_attn.norm(img_q, img_k, img_v)
        txt_q, txt_k, txt_v = _split_heads(self.txt_attn.qkv(modulate(self.txt_norm1(txt), txt_mod1)), self.heads)
        txt_q, txt_k = self.txt_attn.norm(txt_q, txt_k, txt_v)
        if self.image_first:
            attn = attention(torch.cat((img_q, txt_q), dim=2), torch.cat((img_k, txt_k), dim=2),
                             torch.cat((img_v, txt_v), dim=2), pe, attn_mask, transformer_options)
            img_attn, txt_attn = attn[:, : img.shape[1]], attn[:, img.shape[1]:]
        else:
            attn = attention(torch.cat((txt_q, img_q), dim=2), torch.cat((txt_k, img_k), dim=2),
                             torch.cat((txt_v, img_v), dim=2), pe, attn_mask, transformer_options)
            txt_attn, img_attn = attn[:, : txt.shape[1]], attn[:, txt.shape[1]:]
        img = img + img_mod1.gate * self.img_attn.proj(img_attn)
        img = img + img_mod2.gate * self.img_mlp(modulate(self.img_norm2(img), img_mod2))
        txt = txt + txt_mod1.gate * self.txt_attn.proj(txt_attn)
        txt = txt + txt_mod2.gate * self.txt_mlp(modulate(self.txt_norm2(txt), txt_mod2))
        return img, clamp_fp16(txt)


class SingleStreamBlock(nn.Module):
    """Text and image tokens together: one linear for q, k, v and the MLP input, one for both outputs."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0, ops: Any = _ops.plain,
                 modulation: bool = True, gated_mlp: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.hidden = hidden
        self.heads = heads
        self.mlp_hidden = int(hidden * mlp_ratio)
        self.gated = gated_mlp
        mlp_in = self.mlp_hidden * (2 if gated_mlp else 1)
        self.linear1 = ops.Linear(hidden, hidden * 3 + mlp_in, bias=bias)
        self.linear2 = ops.Linear(hidden + self.mlp_hidden, hidden, bias=bias)
        self.norm = QKNorm(hidden // heads)
        self.pre_norm = ops.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        if modulation:
            self.modulation = Modulation(hidden, False, ops)

    def forward(self, x: torch.Tensor, vec: Any, pe: torch.Tensor | None, attn_mask: torch.Tensor | None = None,
                transformer_options: dict[str, Any] | None = None) -> torch.Tensor:
        mod = vec if isinstance(vec, ModulationOut) else self.modulation(vec)[0]
        projected = self.linear1(modulate(self.pre_norm(x), mod))
        qkv, hidden_mlp = projected[..., : 3 * self.hidden], projected[..., 3 * self.hidden:]
        q, k, v = _split_heads(qkv, self.heads)
        q, k = self.norm(q, k, v)
        attn = attention(q, k, v, pe, attn_mask, transformer_options)
        activated = swiglu(hidden_mlp) if self.gated else F.gelu(hidden_mlp, approximate="tanh")
        out = self.linear2(torch.cat((attn, activated), 2))
        return clamp_fp16(x + mod.gate * out)


class LastLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int, ops: Any = _ops.plain, modulation: bool = True,
                 bias: bool = True) -> None:
        super().__init__()
        self.norm_final = ops.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = ops.Linear(hidden, out_channels, bias=bias)
        if modulation:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(hidden, 2 * hidden, bias=bias))

    def forward(self, x: torch.Tensor, vec: Any) -> torch.Tensor:
        if isinstance(vec, tuple):
            shift, scale = vec
        else:
            if vec.ndim == 2:
                vec = vec[:, None, :]
            shift, scale = self.adaLN_modulation(vec).chunk(2, dim=-1)
        return self.linear(torch.addcmul(shift, self.norm_final(x), 1 + scale))
