"""A decoder-only transformer (Llama / Qwen2 / Qwen3 / Gemma 2 style) used as a text encoder.

The image families that condition on an LLM read its hidden states, not its
next-token predictions: this network returns the final (normed) hidden state
and, when asked, the state after a given layer. It covers the variants those
encoders use: grouped-query attention, optional q/k/v biases (Qwen2.5), per-head
RMS norms on queries and keys (Qwen3), and multimodal rotary positions
(Qwen2.5-VL: separate temporal, height and width positions for image tokens).
Gemma 2 is the same network with its own choices switched on by the config
(``gemma``): embeddings scaled by sqrt(width), RMS norms scaling by
(1 + weight), extra norms after attention and around the feed-forward, a
tanh-approximated GELU gate, attention scores soft-capped (tanh) and every
other layer (the first, third ...) attending only within a sliding window.
Gemma 3 keeps those norms and adds Gemma-style RMS norms on each head's
queries and keys; it drops the soft caps, and five of every six layers
attend within the window, with a rotary base of their own (10 000) while the
global layers stretch positions linearly (12B: by 8).
For generation (generate.py) it gives next-token scores (``logits``) and runs
new tokens against a key/value cache (``step``).

Weights use Hugging Face's names under ``model.`` (``model.layers.0.self_attn.q_proj.weight``),
which is how ComfyUI's text encoder files store them. Layers come from an
``ops`` namespace (model/ops.py), so fp8 and mixed-precision files compute in
the compute dtype layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops


@dataclass(frozen=True)
class LLMConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    qkv_bias: bool = False
    qk_norm: bool = False
    #: multimodal rotary sections (temporal, height, width) in rotary pairs; None for plain 1-d positions
    rope_sections: tuple[int, ...] | None = None
    #: an output projection of its own (``lm_head.weight``); without one the logits reuse the token embeddings
    lm_head: bool = False
    #: Gemma 2's variant (see the module's docstring)
    gemma: bool = False
    #: attention scores become cap * tanh(score / cap)
    attn_softcap: float | None = None
    #: next-token scores become cap * tanh(score / cap)
    final_softcap: float | None = None
    #: keys this many positions back or further are hidden from the queries of the even-numbered layers
    sliding_window: int | None = None
    #: queries are scaled by this ** -0.5 (head_dim ** -0.5 when None)
    query_pre_attn_scalar: float | None = None
    #: every n-th layer (the n-th, 2n-th ...) attends globally, the others within ``sliding_window``
    global_every: int = 2
    #: rotary base of the sliding-window layers (``rope_theta`` when None)
    local_rope_theta: float | None = None
    #: the global layers' rotary positions are divided by this (linear scaling)
    rope_scale: float = 1.0


QWEN25_7B = LLMConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
                      num_kv_heads=4, qkv_bias=True, rope_sections=(16, 24, 24))
LLAMA31_8B = LLMConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
                       num_kv_heads=8, rms_norm_eps=1e-5, rope_theta=500_000.0)
QWEN3_4B = LLMConfig(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_layers=36, num_heads=32,
                     num_kv_heads=8, qk_norm=True)
GEMMA2_2B = LLMConfig(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_layers=26, num_heads=8,
                      num_kv_heads=4, head_dim=256, rope_theta=10_000.0, gemma=True, attn_softcap=50.0,
                      final_softcap=30.0, sliding_window=4096, query_pre_attn_scalar=256.0)
GEMMA3_12B = LLMConfig(vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_layers=48, num_heads=16,
                       num_kv_heads=8, head_dim=256, qk_norm=True, gemma=True, sliding_window=1024,
                       query_pre_attn_scalar=256.0, global_every=6, local_rope_theta=10_000.0, rope_scale=8.0)


class OffsetRMSNorm(nn.Module):
    """Gemma's RMS norm: computed in float32 and scaled by (1 + weight), so zero weights leave it plain."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weight.float().to(h.device))).to(x.dtype)


def rms_norm(c: LLMConfig, ops: Any, dim: int) -> nn.Module:
    return OffsetRMSNorm(dim, c.rms_norm_eps) if c.gemma else ops.RMSNorm(dim, eps=c.rms_norm_eps)


def rotary_tables(config: LLMConfig, positions: torch.Tensor, device: torch.device,
                  dtype: torch.dtype, local: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [B, L, head_dim] for positions [B, L] (or [3, B, L] with rope sections).

    ``local``: the tables of the sliding-window layers (their own base, no scaling).
    """
    half = config.head_dim // 2
    theta = config.local_rope_theta if local and config.local_rope_theta is not None else config.rope_theta
    inv_freq = 1.0 / (theta ** (torch.arange(0, half, device=device, dtype=torch.float32) / half))
    if not local and config.rope_scale != 1.0:
        inv_freq = inv_freq / config.rope_scale
    pos = positions.to(device=device, dtype=torch.float32)
    if pos.ndim == 2:
        freqs = pos[..., None] * inv_freq  # [B, L, half]
    else:  # [3, B, L]: each slice of the frequencies follows its own axis
        per_axis = pos[..., None] * inv_freq  # [3, B, L, half]
        sections = config.rope_sections or (half,)
        chunks, start = [], 0
        for i, size in enumerate(sections):
            chunks.append(per_axis[i % len(per_axis), ..., start:start + size])
            start += size
        freqs = torch.cat(chunks, dim=-1)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the split-half layout (x: [B, heads, L, D]; cos/sin: [B, L, D])."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)


def window_mask(mask: torch.Tensor | None, queries: int, keys: int, window: int, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """``mask`` with the keys ``window`` or more positions before each query hidden (queries are the last ones)."""
    q = torch.arange(keys - queries, keys, device=device)[:, None]
    far = (q - torch.arange(keys, device=device)[None, :]) >= window
    hidden = torch.zeros(queries, keys, dtype=dtype, device=device).masked_fill_(far, torch.finfo(dtype).min / 4)
    return hidden[None, None] if mask is None else mask + hidden


def capped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                     scale: float, cap: float) -> torch.Tensor:
    """Attention whose scores are soft-capped before the mask and softmax (float32 softmax)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = torch.tanh(scores / cap) * cap
    if mask is not None:
        scores = scores + mask
    return torch.matmul(scores.float().softmax(dim=-1).to(v.dtype), v)


class Attention(nn.Module):
    def __init__(self, c: LLMConfig, ops: Any, sliding: bool = False) -> None:
        super().__init__()
        self.config = c
        self.sliding = sliding and c.sliding_window is not None
        self.q_proj = ops.Linear(c.hidden_size, c.num_heads * c.head_dim, bias=c.qkv_bias)
        self.k_proj = ops.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.v_proj = ops.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.o_proj = ops.Linear(c.num_heads * c.head_dim, c.hidden_size, bias=False)
        if c.qk_norm:
            self.q_norm = rms_norm(c, ops, c.head_dim)
            self.k_norm = rms_norm(c, ops, c.head_dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None, cache: list | None = None) -> torch.Tensor:
        """``cache``: a one-item list holding this layer's earlier (keys, values), extended in place."""
        c = self.config
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, c.num_heads, c.head_dim)
        k = self.k_proj(x).view(b, n, c.num_kv_heads, c.head_dim)
        v = self.v_proj(x).view(b, n, c.num_kv_heads, c.head_dim)
        if c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = rotate(q, *rope), rotate(k, *rope)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0][0], k], dim=2), torch.cat([cache[0][1], v], dim=2)
                cache[0] = (k, v)
            else:
                cache.append((k, v))
        if c.num_kv_heads != c.num_heads:
            repeat = c.num_heads // c.num_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        if self.sliding and c.sliding_window is not None and k.shape[2] > c.sliding_window:
            mask = window_mask(mask, n, k.shape[2], c.sliding_window, q.dtype, q.device)
        scale = (c.query_pre_attn_scalar or c.head_dim) ** -0.5
        if c.attn_softcap is not None:
            out = capped_attention(q, k, v, mask, scale, c.attn_softcap)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, c.num_heads * c.head_dim))


class MLP(nn.Module):
    def __init__(self, c: LLMConfig, ops: Any) -> None:
        super().__init__()
        self.gate_proj = ops.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = ops.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = ops.Linear(c.intermediate_size, c.hidden_size, bias=False)
        self.gemma = c.gemma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate_proj(x)
        gate = F.gelu(gate, approximate="tanh") if self.gemma else F.silu(gate)
        return self.down_proj(gate * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm attention and feed-forward; Gemma also norms each one's output (and names the norms apart)."""

    def __init__(self, c: LLMConfig, ops: Any, index: int = 0) -> None:
        super().__init__()
        self.gemma = c.gemma
        #: whether this layer attends within the window (and takes the local rotary tables)
        self.local = c.sliding_window is not None and (index + 1) % c.global_every != 0
        self.self_attn = Attention(c, ops, sliding=self.local)
        self.mlp = MLP(c, ops)
        self.input_layernorm = rms_norm(c, ops, c.hidden_size)
        self.post_attention_layernorm = rms_norm(c, ops, c.hidden_size)
        if c.gemma:
            self.pre_feedforward_layernorm = rms_norm(c, ops, c.hidden_size)
            self.post_feedforward_layernorm = rms_norm(c, ops, c.hidden_size)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None, cache: list | None = None) -> torch.Tensor:
        if self.gemma:
            x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), rope, mask, cache))
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        x = x + self.self_attn(self.input_layernorm(x), rope, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    """Token embeddings, the layers and the final norm (the ``model.`` part of the files)."""

    def __init__(self, c: LLMConfig, ops: Any) -> None:
        super().__init__()
        self.embed_tokens = ops.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(c, ops, i) for i in range(c.num_layers)])
        self.norm = rms_norm(c, ops, c.hidden_size)


def causal_mask(attention_mask: torch.Tensor | None, length: int, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """Additive [B or 1, 1, L, L] mask: causal, and padded keys (attention_mask == 0) hidden."""
    lowest = torch.finfo(dtype).min / 4
    mask = torch.full((length, length), lowest, dtype=dtype, device=device).triu_(1)[None, None]
    if attention_mask is not None:
        pad = (1.0 - attention_mask.to(device=device, dtype=dtype))[:, None, None, :] * lowest
        mask = mask + pad
    return mask


class DecoderLM(nn.Module):
    """The decoder as a text encoder: embeddings in, hidden states out."""

    def __init__(self, config: LLMConfig, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = config
        self.compute_dtype = compute_dtype
        self.model = DecoderModel(config, ops)
        if config.lm_head:
            self.lm_head = ops.Linear(config.hidden_size, config.vocab_size, bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.model.norm.weight.dtype

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids, dtype=self.dtype) if isinstance(
            self.model.embed_tokens, _ops.CastEmbedding) else self.model.embed_tokens(ids).to(self.dtype)

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, hidden_layer: int | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(final normed hidden state, state after layer ``hidden_layer`` or None).

        ``hidden_layer`` counts like Python indices: -2 is the input of the last
        layer. ``positions`` is [B, L] or, for multimodal rotary, [3, B, L];
        by default 0..L-1.
        """
        layers = self.model.layers
        wanted = None if hidden_layer is None else hidden_layer % len(layers)
        hidden = None
        x = embeds
        for i, x in enumerate(self._run(embeds, attention_mask, positions)):
            if i == wanted:
                hidden = x
        return self.model.norm(x), hidden

    def all_states(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, layers + 1, L, D]: the embeddings, every layer's output but the last, then the final normed state.

        This is what ComfyUI's ``layer="all"`` returns (HiDream reads one per block).
        """
        states = [self._scaled(embeds)]
        outputs = list(self._run(embeds, attention_mask, None))
        states += outputs[:-1] + [self.model.norm(outputs[-1])]
        return torch.stack(states, dim=1)

    def step(self, embeds: torch.Tensor, attention_mask: torch.Tensor, cache: list[list],
             positions: torch.Tensor | None = None) -> torch.Tensor:
        """Generation with a key/value cache: the final normed states of ``embeds`` [B, n, D], the new tokens.

        ``attention_mask`` [B, past + n] covers the earlier tokens and these
        (0 hides padding); positions continue from the past; ``cache`` holds
        one list per layer (start with empty ones) and is extended in place.
        ``positions`` replace the continuing ones ([B, n], or [3, B, n] for
        multimodal rotary).
        """
        x = self._scaled(embeds)
        b, n, _ = x.shape
        past = attention_mask.shape[1] - n
        if positions is None:
            positions = torch.arange(past, past + n, device=x.device).unsqueeze(0).expand(b, n)
        ropes = self._ropes(positions, x)
        if n == 1:  # one new token sees every earlier one: only the padding is hidden
            lowest = torch.finfo(x.dtype).min / 4
            mask = (1.0 - attention_mask.to(device=x.device, dtype=x.dtype))[:, None, None, :] * lowest
        else:
            mask = causal_mask(attention_mask, past + n, x.dtype, x.device)[:, :, past:]
        for layer, layer_cache in zip(self.model.layers, cache, strict=True):
            x = layer(x, ropes[layer.local], mask, layer_cache)
        return self.model.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 next-token scores of hidden states [..., D], by ``lm_head`` or the tied token embeddings."""
        weight = self.lm_head.weight if self.config.lm_head else self.model.embed_tokens.weight
        if weight.dtype in _ops.FP8:
            weight = weight.to(self.dtype)
        elif weight.dtype in (torch.int8, torch.uint8):  # packed NVFP4 / int8 (ComfyUI's mixed files)
            owner = self.lm_head if self.config.lm_head else self.model.embed_tokens
            weight = _ops.cast_weight(owner, "weight", torch.empty((), dtype=self.dtype, device=weight.device))
        scores = F.linear(hidden.to(weight.dtype), weight).float()
        cap = self.config.final_softcap
        return torch.tanh(scores / cap) * cap if cap is not None else scores

    def _scaled(self, embeds: torch.Tensor) -> torch.Tensor:
        """The embeddings in the compute dtype; Gemma scales them by sqrt(width) (rounded to that dtype)."""
        x = embeds.to(self.dtype)
        if self.config.gemma:
            x = x * torch.tensor(self.config.hidden_size ** 0.5, dtype=x.dtype)
        return x

    def _run(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None,
             positions: torch.Tensor | None) -> Any:
        """Each layer's output in turn."""
        x = self._scaled(embeds)
        b, n, _ = x.shape
        if positions is None:
            positions = torch.arange(n, device=x.device).unsqueeze(0).expand(b, n)
        ropes = self._ropes(positions, x)
        mask = causal_mask(attention_mask, n, x.dtype, x.device) if n > 1 or attention_mask is not None else None
        for layer in self.model.layers:
            x = layer(x, ropes[layer.local], mask)
            yield x

    def _ropes(self, positions: torch.Tensor, x: torch.Tensor) -> dict[bool, tuple[torch.Tensor, torch.Tensor]]:
        """The rotary tables of the global layers (key False) and of the sliding-window ones (key True)."""
        c = self.config
        glob = rotary_tables(c, positions, x.device, x.dtype)
        separate = c.local_rope_theta is not None or c.rope_scale != 1.0
        return {False: glob, True: rotary_tables(c, positions, x.device, x.dtype, local=True) if separate else glob}
