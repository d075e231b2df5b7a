"""ACE-Step 1.5's diffusion network: the DiT, its condition encoder and the audio-code detokenizer.

One file holds four parts under ComfyUI's names: ``decoder.`` (the DiT over
the 25 Hz latent, patched two frames at a time, alternating sliding-window and
full self-attention, cross-attention to the condition, AdaLN from two
timestep embeddings), ``encoder.`` (the caption projected, the lyrics and the
timbre reference each through a small bidirectional transformer, then the three
sequences joined), ``tokenizer.`` (pools 5 latent frames into one finite-scalar
quantised code: its codebook turns the language model's 5 Hz audio codes back
into vectors) and ``detokenizer.`` (expands each code vector to 5 latent
frames, the "LM hints" the DiT sees beside the noisy latent). Attention heads
are 128 wide; the rest of the layout comes from the file (see detect.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...components.llm.decoder import rotate
from ...model.attention import optimized_attention

HEAD_DIM = 128
ROPE_THETA = 1_000_000.0
#: the audio code ComfyUI pads a short code sequence with
PAD_CODE = 35847
FSQ_LEVELS = (8, 8, 8, 5, 5, 5)


@dataclass(frozen=True)
class AceStepConfig:
    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_layers: int = 24
    num_heads: int = 16
    num_kv_heads: int = 8
    in_channels: int = 192
    out_channels: int = 64
    patch_size: int = 2
    sliding_window: int = 128
    #: the condition encoder's width (XL: narrower than the DiT)
    encoder_hidden_size: int = 2048
    encoder_intermediate_size: int = 6144
    encoder_heads: int = 16
    encoder_kv_heads: int = 8
    text_hidden_dim: int = 1024
    timbre_hidden_dim: int = 64
    lyric_layers: int = 8
    timbre_layers: int = 4
    tokenizer_layers: int = 2
    detokenizer_layers: int = 2
    pool_window: int = 5
    rms_norm_eps: float = 1e-6


def rope(length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [1, L, 128] for positions 0..L-1 (split-half layout, base 1e6)."""
    half = HEAD_DIM // 2
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, half, device=device, dtype=torch.float32) / half))
    freqs = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """[cos, sin] features of ``t * scale`` at frequencies 10000^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * scale)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Attention(nn.Module):
    """Grouped-query attention with per-head RMS norms on queries and keys; rotary only on self-attention."""

    def __init__(self, width: int, heads: int, kv_heads: int, eps: float, ops: Any) -> None:
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads
        self.q_proj = ops.Linear(width, heads * HEAD_DIM, bias=False)
        self.k_proj = ops.Linear(width, kv_heads * HEAD_DIM, bias=False)
        self.v_proj = ops.Linear(width, kv_heads * HEAD_DIM, bias=False)
        self.o_proj = ops.Linear(heads * HEAD_DIM, width, bias=False)
        self.q_norm = ops.RMSNorm(HEAD_DIM, eps=eps)
        self.k_norm = ops.RMSNorm(HEAD_DIM, eps=eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        source = x if context is None else context
        q = self.q_norm(self.q_proj(x).view(b, n, self.heads, HEAD_DIM)).transpose(1, 2)
        k = self.k_norm(self.k_proj(source).view(b, source.shape[1], self.kv_heads, HEAD_DIM)).transpose(1, 2)
        v = self.v_proj(source).view(b, source.shape[1], self.kv_heads, HEAD_DIM).transpose(1, 2)
        if rotary is not None:
            q, k = rotate(q, *rotary), rotate(k, *rotary)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out = optimized_attention(q, k, v, self.heads, mask=mask, skip_reshape=True)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, width: int, inner: int, ops: Any) -> None:
        super().__init__()
        self.gate_proj = ops.Linear(width, inner, bias=False)
        self.up_proj = ops.Linear(width, inner, bias=False)
        self.down_proj = ops.Linear(inner, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class EncoderLayer(nn.Module):
    """A pre-norm bidirectional transformer layer (the encoders', pooler's and detokenizer's)."""

    def __init__(self, width: int, heads: int, kv_heads: int, inner: int, eps: float, ops: Any) -> None:
        super().__init__()
        self.self_attn = Attention(width, heads, kv_heads, eps, ops)
        self.input_layernorm = ops.RMSNorm(width, eps=eps)
        self.post_attention_layernorm = ops.RMSNorm(width, eps=eps)
        self.mlp = MLP(width, inner, ops)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rotary=rotary)
        return x + self.mlp(self.post_attention_layernorm(x))


class SequenceEncoder(nn.Module):
    """Input projection, encoder layers, final norm (the lyric and timbre encoders)."""

    def __init__(self, c: AceStepConfig, in_dim: int, layers: int, ops: Any, special_token: bool = False) -> None:
        super().__init__()
        width = c.encoder_hidden_size
        self.embed_tokens = ops.Linear(in_dim, width)
        self.norm = ops.RMSNorm(width, eps=c.rms_norm_eps)
        self.layers = nn.ModuleList([EncoderLayer(width, c.encoder_heads, c.encoder_kv_heads,
                                                  c.encoder_intermediate_size, c.rms_norm_eps, ops)
                                     for _ in range(layers)])
        if special_token:
            self.special_token = nn.Parameter(torch.empty(1, 1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(x)
        rotary = rope(x.shape[1], x.device, x.dtype)
        for layer in self.layers:
            x = layer(x, rotary)
        return self.norm(x)


def timbre_per_item(states: torch.Tensor, batch: int) -> torch.Tensor:
    """The packed timbre references' first states, regrouped per batch item.

    ComfyUI marks every packed reference as belonging to item 0, so item 0 gets
    all of them in order and the other items get zero rows of the same count.
    """
    out = states.new_zeros(batch, states.shape[0], states.shape[-1])
    out[0] = states
    return out


class ConditionEncoder(nn.Module):
    def __init__(self, c: AceStepConfig, ops: Any) -> None:
        super().__init__()
        self.text_projector = ops.Linear(c.text_hidden_dim, c.encoder_hidden_size, bias=False)
        self.lyric_encoder = SequenceEncoder(c, c.text_hidden_dim, c.lyric_layers, ops)
        self.timbre_encoder = SequenceEncoder(c, c.timbre_hidden_dim, c.timbre_layers, ops, special_token=True)

    def forward(self, text: torch.Tensor, lyrics: torch.Tensor, timbre: torch.Tensor) -> torch.Tensor:
        """[B, lyrics + references + text, width]: no masks (ComfyUI passes none), so plain concatenation."""
        lyric = self.lyric_encoder(lyrics)
        refs = timbre_per_item(self.timbre_encoder(timbre)[:, 0], text.shape[0])
        return torch.cat([lyric, refs.to(lyric), self.text_projector(text)], dim=1)


class TimestepEmbedding(nn.Module):
    def __init__(self, width: int, ops: Any) -> None:
        super().__init__()
        self.linear_1 = ops.Linear(256, width)
        self.linear_2 = ops.Linear(width, width)
        self.time_proj = ops.Linear(width, width * 6)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        temb = self.linear_2(F.silu(self.linear_1(timestep_embedding(t, 256).to(dtype))))
        return temb, self.time_proj(F.silu(temb)).unflatten(1, (6, -1))


class DiTLayer(nn.Module):
    def __init__(self, c: AceStepConfig, sliding: bool, ops: Any) -> None:
        super().__init__()
        eps, width = c.rms_norm_eps, c.hidden_size
        self.sliding = sliding
        self.self_attn_norm = ops.RMSNorm(width, eps=eps)
        self.self_attn = Attention(width, c.num_heads, c.num_kv_heads, eps, ops)
        self.cross_attn_norm = ops.RMSNorm(width, eps=eps)
        self.cross_attn = Attention(width, c.num_heads, c.num_kv_heads, eps, ops)
        self.mlp_norm = ops.RMSNorm(width, eps=eps)
        self.mlp = MLP(width, c.intermediate_size, ops)
        self.scale_shift_table = nn.Parameter(torch.empty(1, 6, width))

    def forward(self, x: torch.Tensor, modulation: torch.Tensor, context: torch.Tensor,
                rotary: tuple[torch.Tensor, torch.Tensor], window: torch.Tensor | None) -> torch.Tensor:
        table = self.scale_shift_table.to(modulation) + modulation
        shift, scale, gate, mlp_shift, mlp_scale, mlp_gate = table.chunk(6, dim=1)
        h = self.self_attn_norm(x) * (1 + scale) + shift
        x = x + self.self_attn(h, rotary=rotary, mask=window if self.sliding else None) * gate
        x = x + self.cross_attn(self.cross_attn_norm(x), context=context)
        h = self.mlp_norm(x) * (1 + mlp_scale) + mlp_shift
        return x + self.mlp(h) * mlp_gate


class DiT(nn.Module):
    """The ``decoder.``: [B, T, in] (context latents + noisy latent) -> velocity [B, T, out]."""

    def __init__(self, c: AceStepConfig, ops: Any) -> None:
        super().__init__()
        self.config = c
        self.proj_in = nn.Sequential(nn.Identity(), ops.Conv1d(c.in_channels, c.hidden_size, c.patch_size,
                                                               stride=c.patch_size))
        self.time_embed = TimestepEmbedding(c.hidden_size, ops)
        self.time_embed_r = TimestepEmbedding(c.hidden_size, ops)
        self.condition_embedder = ops.Linear(c.encoder_hidden_size, c.hidden_size)
        self.layers = nn.ModuleList([DiTLayer(c, i % 2 == 0, ops) for i in range(c.num_layers)])
        self.norm_out = ops.RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.proj_out = nn.Sequential(nn.Identity(), ops.ConvTranspose1d(c.hidden_size, c.out_channels,
                                                                         c.patch_size, stride=c.patch_size))
        self.scale_shift_table = nn.Parameter(torch.empty(1, 2, c.hidden_size))

    def forward(self, x: torch.Tensor, t: torch.Tensor, t_r: torch.Tensor, context: torch.Tensor,
                context_latents: torch.Tensor) -> torch.Tensor:
        c = self.config
        temb, modulation = self.time_embed(t, x.dtype)
        temb_r, modulation_r = self.time_embed_r(t - t_r, x.dtype)
        temb, modulation = temb + temb_r, modulation + modulation_r
        h = torch.cat([context_latents, x], dim=-1)
        length = h.shape[1]
        h = F.pad(h, (0, 0, 0, -length % c.patch_size))
        h = self.proj_in(h.transpose(1, 2)).transpose(1, 2)
        context = self.condition_embedder(context)
        n = h.shape[1]
        rotary = rope(n, h.device, h.dtype)
        pos = torch.arange(n, device=h.device)
        outside = (pos[:, None] - pos[None, :]).abs() > c.sliding_window
        window = torch.zeros(n, n, device=h.device, dtype=h.dtype).masked_fill_(outside, torch.finfo(h.dtype).min)
        for layer in self.layers:
            h = layer(h, modulation, context, rotary, window[None, None])
        shift, scale = (self.scale_shift_table.to(temb) + temb.unsqueeze(1)).chunk(2, dim=1)
        h = self.norm_out(h) * (1 + scale) + shift
        return self.proj_out(h.transpose(1, 2)).transpose(1, 2)[:, :length]


class AttentionPooler(nn.Module):
    """Pools each window of frames into its leading special token (16 heads, 8 key/value heads)."""

    def __init__(self, c: AceStepConfig, ops: Any) -> None:
        super().__init__()
        width = c.encoder_hidden_size
        self.embed_tokens = ops.Linear(width, width)
        self.norm = ops.RMSNorm(width, eps=c.rms_norm_eps)
        self.special_token = nn.Parameter(torch.empty(1, 1, width))
        self.layers = nn.ModuleList([EncoderLayer(width, 16, 8, width * 3, c.rms_norm_eps, ops)
                                     for _ in range(c.tokenizer_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, p, d = x.shape
        x = self.embed_tokens(x)
        x = torch.cat([self.special_token.to(x).expand(b, t, 1, -1), x], dim=2).view(b * t, p + 1, d)
        rotary = rope(p + 1, x.device, x.dtype)
        for layer in self.layers:
            x = layer(x, rotary)
        return self.norm(x)[:, 0].view(b, t, d)


def fsq_codes(indices: torch.Tensor, levels: tuple[int, ...] = FSQ_LEVELS) -> torch.Tensor:
    """Finite-scalar-quantiser code vectors in [-1, 1] of integer codes (mixed radix over ``levels``)."""
    basis = [math.prod(levels[:i]) for i in range(len(levels))]
    idx = indices.long()[..., None]
    lv = torch.tensor(levels, device=indices.device)
    digits = (idx // torch.tensor(basis, device=indices.device)) % lv
    return digits.float() * (2.0 / (lv.float() - 1)) - 1.0


class ResidualFSQ(nn.Module):
    """The quantiser's projections (one quantiser level: its codes need no further scaling)."""

    def __init__(self, width: int, ops: Any) -> None:
        super().__init__()
        self.project_in = ops.Linear(width, len(FSQ_LEVELS))
        self.project_out = ops.Linear(len(FSQ_LEVELS), width)

    def from_codes(self, codes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B, N] audio codes -> [B, N, width]."""
        return self.project_out(fsq_codes(codes).to(dtype))


class AudioTokenizer(nn.Module):
    def __init__(self, c: AceStepConfig, ops: Any) -> None:
        super().__init__()
        self.audio_acoustic_proj = ops.Linear(c.out_channels, c.encoder_hidden_size)
        self.attention_pooler = AttentionPooler(c, ops)
        self.quantizer = ResidualFSQ(c.encoder_hidden_size, ops)

    def forward(self, latents: torch.Tensor, window: int) -> torch.Tensor:
        """[B, T, 64] latents -> quantised vectors [B, ceil(T / window), width] (the 5 Hz hints of a reference)."""
        b, t, d = latents.shape
        latents = F.pad(latents, (0, 0, 0, -t % window))
        pooled = self.attention_pooler(self.audio_acoustic_proj(latents.view(b, -1, window, d)))
        z = self.quantizer.project_in(pooled)
        levels = torch.tensor(FSQ_LEVELS, device=z.device, dtype=z.dtype)
        clamp = 1 + 1 / (levels - 1)
        z = (z / clamp).tanh() * clamp
        bounded = torch.floor((levels - 1) * (torch.tanh(z) + 1) / 2 + 0.5) * (2 / (levels - 1)) - 1
        return self.quantizer.project_out(bounded)


class Detokenizer(nn.Module):
    def __init__(self, c: AceStepConfig, ops: Any) -> None:
        super().__init__()
        width = c.encoder_hidden_size
        self.embed_tokens = ops.Linear(width, width)
        self.special_tokens = nn.Parameter(torch.empty(1, c.pool_window, width))
        self.layers = nn.ModuleList([EncoderLayer(width, 16, 8, width * 3, 1e-6, ops)
                                     for _ in range(c.detokenizer_layers)])
        self.norm = ops.RMSNorm(width, eps=1e-6)
        self.proj_out = ops.Linear(width, c.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, width] code vectors -> [B, N * window, 64] latent hints."""
        b, n, d = x.shape
        window = self.special_tokens.shape[1]
        x = self.embed_tokens(x)[:, :, None].expand(b, n, window, d) + self.special_tokens.to(x)[:, None]
        x = x.reshape(b * n, window, d)
        rotary = rope(window, x.device, x.dtype)
        for layer in self.layers:
            x = layer(x, rotary)
        return self.proj_out(self.norm(x)).view(b, n * window, -1)


class AceStep15(nn.Module):
    """The whole file: ``forward(x, timestep, context, lyric_embed, refer_audio, audio_codes, ...)`` as ComfyUI's."""

    def __init__(self, c: AceStepConfig, ops: Any, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = c
        self.compute_dtype = compute_dtype
        self.decoder = DiT(c, ops)
        self.encoder = ConditionEncoder(c, ops)
        self.tokenizer = AudioTokenizer(c, ops)
        self.detokenizer = Detokenizer(c, ops)
        self.null_condition_emb = nn.Parameter(torch.empty(1, 1, c.encoder_hidden_size))

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.null_condition_emb.dtype

    def lm_hints(self, length: int, refer: torch.Tensor, audio_codes: torch.Tensor | None,
                 dtype: torch.dtype) -> torch.Tensor:
        """[B, length, 64]: the detokenized audio codes, or the reference re-quantised when there are none."""
        window = self.config.pool_window
        if audio_codes is not None:
            codes = audio_codes.long()
            if codes.shape[1] * window < length:
                codes = F.pad(codes, (0, math.ceil(length / window) - codes.shape[1]), value=PAD_CODE)
            vectors = self.tokenizer.quantizer.from_codes(codes, dtype)
        else:
            vectors = self.tokenizer(refer, window)
        return self.detokenizer(vectors)[:, :length]

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor | None = None,
                lyric_embed: torch.Tensor | None = None, refer_audio: torch.Tensor | None = None,
                audio_codes: torch.Tensor | None = None, is_covers: bool | None = None,
                replace_with_null_embeds: bool = False, **kwargs: Any) -> torch.Tensor:
        dtype = self.dtype
        latents = x.movedim(-1, -2).to(dtype)
        refer = refer_audio.movedim(-1, -2).to(dtype)
        condition = self.encoder(context.to(dtype), lyric_embed.to(dtype), refer)
        if replace_with_null_embeds:
            condition = self.null_condition_emb.to(condition).expand_as(condition)
        length = latents.shape[1]
        if is_covers is False:
            source = refer[:, :length]
        else:
            source = self.lm_hints(length, refer, audio_codes, dtype)
        context_latents = torch.cat([source, torch.ones_like(latents)], dim=-1)
        out = self.decoder(latents, timestep, timestep, condition, context_latents)
        return out.movedim(-1, -2)
