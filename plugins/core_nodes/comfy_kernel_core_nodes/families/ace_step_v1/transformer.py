"""ACE-Step 1.0's diffusion transformer (ComfyUI's ``ACEStepTransformer2DModel``, 3.5B parameters).

The network predicts the flow velocity of a music latent [B, 8, 16, L] (8
channels, 16 frequency rows, L frames at ~10.8 Hz). Each 16x1 column becomes
one token (``proj_in``: a patch convolution, group norm, 1x1 convolution).
Every block is a Sana-style "linear" block: AdaLN-single modulation from the
timestep, ReLU linear self-attention (cost linear in L) with rotary positions,
softmax cross-attention to the condition (un-normed and un-gated, as the
original), and a gated depth-wise convolutional feed-forward (GLUMBConv).

The condition is one sequence: a speaker embedding (one token; ComfyUI feeds
zeros), the umt5 caption states through ``genre_embedder``, and the lyric
tokens through an embedding table, the Conformer of ``lyric_encoder.py`` and
``lyric_proj``, scaled by ``lyrics_strength``. ``projectors`` (the SSL
alignment heads used in training) are kept only so the file loads strictly.

Weight names are ComfyUI's (the checkpoint's keys after
``model.diffusion_model.``); every width and depth is read from the file by
:func:`config_from_shapes`. The DiT's heads are 128 wide, which the shapes
cannot tell.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model.attention import optimized_attention
from ...model.detection import Shapes, count
from .lyric_encoder import LyricConformer

HEAD_DIM = 128
ROPE_THETA = 1_000_000.0
NORM_EPS = 1e-6
PATCH_GROUPS = 32
#: the largest magnitude the linear self-attention lets through (fp16's range; ComfyUI clips to it)
FP16_MAX = 65504.0


@dataclass(frozen=True)
class AceStepV1Config:
    """The layout of the network; the defaults are the released 3.5B model's."""

    hidden_size: int = 2560
    num_layers: int = 24
    #: the feed-forward's gated width (hidden_size * 2.5)
    ff_inner: int = 6400
    ff_kernel: int = 3
    head_dim: int = HEAD_DIM
    in_channels: int = 8
    out_channels: int = 8
    patch_size: tuple[int, int] = (16, 1)
    #: channels after the patch convolution (in_channels * 256)
    patch_channels: int = 2048
    time_channels: int = 256
    speaker_dim: int = 512
    text_dim: int = 768
    lyric_vocab: int = 6693
    lyric_embed_dim: int = 1024
    lyric_width: int = 1024
    lyric_heads: int = 16
    lyric_ffn: int = 4096
    lyric_layers: int = 6
    #: output widths of the SSL projectors (MERT, mHuBERT)
    ssl_dims: tuple[int, ...] = (1024, 768)

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_dim


def config_from_shapes(shapes: Shapes, prefix: str = "") -> AceStepV1Config:
    """The :class:`AceStepV1Config` of the transformer stored under ``prefix``, read from its tensor shapes."""

    def shape(key: str) -> tuple[int, ...]:
        return tuple(shapes[prefix + key])

    p = re.escape(prefix)
    patch = shape("proj_in.early_conv_layers.0.weight")
    lyric_bias = shape("lyric_encoder.encoders.0.self_attn.pos_bias_u")
    ff_in = shape("transformer_blocks.0.ff.inverted_conv.conv.weight")
    projectors = count(shapes, p + r"projectors\.(\d+)\.")
    return AceStepV1Config(
        hidden_size=shape("genre_embedder.weight")[0],
        num_layers=count(shapes, p + r"transformer_blocks\.(\d+)\."),
        ff_inner=ff_in[0] // 2,
        ff_kernel=shape("transformer_blocks.0.ff.depth_conv.conv.weight")[-1],
        in_channels=patch[1],
        out_channels=shape("final_layer.linear.weight")[0] // (patch[2] * patch[3]),
        patch_size=(patch[2], patch[3]),
        patch_channels=patch[0],
        time_channels=shape("timestep_embedder.linear_1.weight")[1],
        speaker_dim=shape("speaker_embedder.weight")[1],
        text_dim=shape("genre_embedder.weight")[1],
        lyric_vocab=shape("lyric_embs.weight")[0],
        lyric_embed_dim=shape("lyric_embs.weight")[1],
        lyric_width=shape("lyric_proj.weight")[1],
        lyric_heads=lyric_bias[0],
        lyric_ffn=shape("lyric_encoder.encoders.0.feed_forward.w_1.weight")[0],
        lyric_layers=count(shapes, p + r"lyric_encoder\.encoders\.(\d+)\."),
        ssl_dims=tuple(shape(f"projectors.{i}.4.weight")[0] for i in range(projectors)),
    )


def is_ace_v1_transformer(shapes: Shapes, prefix: str = "") -> bool:
    """Whether ``prefix`` holds ACE-Step 1.0's transformer: caption/speaker/lyric inputs beside linear blocks.

    ACE-Step 1.5's DiT keeps everything under ``decoder.`` / ``encoder.`` and
    has none of these names; PixArt/Sana share ``t_block`` but not the
    genre/speaker/lyric inputs.
    """
    return all(prefix + key in shapes for key in (
        "genre_embedder.weight", "speaker_embedder.weight", "lyric_embs.weight", "lyric_proj.weight",
        "lyric_encoder.encoders.0.self_attn.pos_bias_u", "transformer_blocks.0.attn.to_q.weight",
        "transformer_blocks.0.scale_shift_table", "proj_in.early_conv_layers.0.weight"))


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """The blocks' weightless RMS norm (eps 1e-6)."""
    return F.rms_norm(x, (x.shape[-1],), eps=NORM_EPS)


def rope(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [length, dim] for positions 0..length-1: frequencies repeated in two halves, base 1e6."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [B, H, S, D] by ``cos``/``sin`` [S, D], in float32.

    ACE-Step pairs channels (2i, 2i + 1) for the rotation but indexes the
    angles in the split-half layout of ``cos``/``sin``; the released weights
    were trained with exactly this mix, so it is kept.
    """
    even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack([-odd, even], dim=-1).flatten(-2)
    return (x.float() * cos.float() + rotated.float() * sin.float()).to(x.dtype)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, S, H * D] -> [B, H, S, D]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


class LinearSelfAttention(nn.Module):
    """ReLU linear attention: ``relu(q) (relu(k)^T v) / (relu(q) . sum_s relu(k_s) + 1e-15)`` per head.

    Rotary positions go on queries and keys before the ReLU; the products run
    in float32. The output is clipped to fp16's range, as ComfyUI does.
    """

    def __init__(self, width: int, heads: int, ops: Any) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = ops.Linear(width, width)
        self.to_k = ops.Linear(width, width)
        self.to_v = ops.Linear(width, width)
        self.to_out = nn.ModuleList([ops.Linear(width, width)])

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q = split_heads(self.to_q(x), self.heads)
        k = split_heads(self.to_k(x), self.heads)
        v = split_heads(self.to_v(x), self.heads)
        q = F.relu(apply_rope(q, *rotary)).float()
        k = F.relu(apply_rope(k, *rotary)).float()
        kv = torch.matmul(k.transpose(-2, -1), v.float())
        numerator = torch.matmul(q, kv)
        denominator = torch.matmul(q, k.sum(dim=-2).unsqueeze(-1))
        out = (numerator / (denominator + 1e-15)).transpose(1, 2).flatten(2).to(x.dtype)
        return self.to_out[0](out).clamp(-FP16_MAX, FP16_MAX)


class CrossAttention(nn.Module):
    """Softmax attention from the latent tokens to the condition, rotary on both sides (each its own positions).

    ``add_q_proj`` / ``add_k_proj`` / ``add_v_proj`` / ``to_add_out`` are in the
    checkpoint but the attention the model runs never uses them.
    """

    def __init__(self, width: int, heads: int, ops: Any) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = ops.Linear(width, width)
        self.to_k = ops.Linear(width, width)
        self.to_v = ops.Linear(width, width)
        self.add_q_proj = ops.Linear(width, width)
        self.add_k_proj = ops.Linear(width, width)
        self.add_v_proj = ops.Linear(width, width)
        self.to_out = nn.ModuleList([ops.Linear(width, width)])
        self.to_add_out = ops.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor],
                context_rotary: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
        q = apply_rope(split_heads(self.to_q(x), self.heads), *rotary)
        k = apply_rope(split_heads(self.to_k(context), self.heads), *context_rotary)
        v = split_heads(self.to_v(context), self.heads)
        out = optimized_attention(q, k, v, self.heads, mask=mask, skip_reshape=True).to(q.dtype)
        return self.to_out[0](out)


class ConvLayer(nn.Module):
    """A 1-d convolution kept under ``.conv`` (the checkpoint's nesting)."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvFeedForward(nn.Module):
    """GLUMBConv: 1x1 expansion + SiLU, depth-wise convolution, SiLU-gated halves, 1x1 projection."""

    def __init__(self, width: int, inner: int, kernel: int, ops: Any) -> None:
        super().__init__()
        self.inverted_conv = ConvLayer(ops.Conv1d(width, inner * 2, 1))
        self.depth_conv = ConvLayer(ops.Conv1d(inner * 2, inner * 2, kernel, padding=kernel // 2, groups=inner * 2))
        self.point_conv = ConvLayer(ops.Conv1d(inner, width, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depth_conv(F.silu(self.inverted_conv(x.transpose(1, 2))))
        h, gate = h.chunk(2, dim=1)
        return self.point_conv(h * F.silu(gate)).transpose(1, 2)


class LinearTransformerBlock(nn.Module):
    """Modulated linear self-attention, plain residual cross-attention, modulated gated feed-forward."""

    def __init__(self, c: AceStepV1Config, ops: Any) -> None:
        super().__init__()
        self.attn = LinearSelfAttention(c.hidden_size, c.num_heads, ops)
        self.cross_attn = CrossAttention(c.hidden_size, c.num_heads, ops)
        self.ff = ConvFeedForward(c.hidden_size, c.ff_inner, c.ff_kernel, ops)
        self.scale_shift_table = nn.Parameter(torch.empty(6, c.hidden_size))

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor,
                rotary: tuple[torch.Tensor, torch.Tensor], context_rotary: tuple[torch.Tensor, torch.Tensor],
                context_mask: torch.Tensor | None) -> torch.Tensor:
        table = self.scale_shift_table.to(device=temb.device, dtype=temb.dtype)[None]
        shift, scale, gate, mlp_shift, mlp_scale, mlp_gate = (table + temb.unflatten(1, (6, -1))).chunk(6, dim=1)
        x = x + gate * self.attn(rms_norm(x) * (1 + scale) + shift, rotary)
        x = x + self.cross_attn(x, context, rotary, context_rotary, context_mask)
        return x + mlp_gate * self.ff(rms_norm(x) * (1 + mlp_scale) + mlp_shift)


def timestep_features(t: torch.Tensor, channels: int) -> torch.Tensor:
    """[cos, sin] sinusoids of the timesteps (max period 10000, no frequency shift), float32 [B, channels]."""
    half = channels // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    angles = t[:, None].float() * torch.exp(exponent)[None]
    out = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(out, (0, 1)) if channels % 2 else out


class TimestepEmbedding(nn.Module):
    def __init__(self, channels: int, width: int, ops: Any) -> None:
        super().__init__()
        self.linear_1 = ops.Linear(channels, width)
        self.linear_2 = ops.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class PatchEmbed(nn.Module):
    """[B, C, 16, L] -> [B, L, width]: a 16x1 patch convolution, group norm, 1x1 convolution."""

    def __init__(self, c: AceStepV1Config, ops: Any) -> None:
        super().__init__()
        self.early_conv_layers = nn.Sequential(
            ops.Conv2d(c.in_channels, c.patch_channels, c.patch_size, stride=c.patch_size),
            ops.GroupNorm(PATCH_GROUPS, c.patch_channels, eps=NORM_EPS),
            ops.Conv2d(c.patch_channels, c.hidden_size, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.early_conv_layers(x).flatten(2).transpose(1, 2)


class FinalLayer(nn.Module):
    """Modulated RMS norm and the projection back to patches, reassembled into [B, out, 16, L]."""

    def __init__(self, c: AceStepV1Config, ops: Any) -> None:
        super().__init__()
        self.patch_size = c.patch_size
        self.out_channels = c.out_channels
        self.linear = ops.Linear(c.hidden_size, c.patch_size[0] * c.patch_size[1] * c.out_channels)
        self.scale_shift_table = nn.Parameter(torch.empty(2, c.hidden_size))

    def forward(self, x: torch.Tensor, embedded_timestep: torch.Tensor, width: int) -> torch.Tensor:
        table = self.scale_shift_table.to(device=embedded_timestep.device, dtype=embedded_timestep.dtype)[None]
        shift, scale = (table + embedded_timestep[:, None]).chunk(2, dim=1)
        x = self.linear(rms_norm(x) * (1 + scale) + shift)
        b, n, _ = x.shape
        ph, pw = self.patch_size
        out = x.view(b, n, ph, pw, self.out_channels).permute(0, 4, 2, 1, 3).reshape(b, self.out_channels, ph, n * pw)
        if out.shape[-1] < width:
            return F.pad(out, (0, width - out.shape[-1]))
        return out[..., :width]


def _projector(width: int, out: int, ops: Any) -> nn.Sequential:
    return nn.Sequential(ops.Linear(width, 2 * width), nn.SiLU(), ops.Linear(2 * width, 2 * width), nn.SiLU(),
                         ops.Linear(2 * width, out))


class AceStepV1Transformer(nn.Module):
    """The whole ``model.diffusion_model.``: ``forward(x, timestep, context, lyric_token_idx, ...)`` -> velocity.

    ``ops`` is a layer namespace from ``model/ops.py`` (plain or casting layers);
    ``compute_dtype`` is the activation dtype when the weights are stored in
    another one (fp8, or fp16 computed in bf16).
    """

    def __init__(self, config: AceStepV1Config, ops: Any, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        c = config
        self.config = c
        self.compute_dtype = compute_dtype
        self.transformer_blocks = nn.ModuleList([LinearTransformerBlock(c, ops) for _ in range(c.num_layers)])
        self.timestep_embedder = TimestepEmbedding(c.time_channels, c.hidden_size, ops)
        self.t_block = nn.Sequential(nn.SiLU(), ops.Linear(c.hidden_size, 6 * c.hidden_size))
        self.speaker_embedder = ops.Linear(c.speaker_dim, c.hidden_size)
        self.genre_embedder = ops.Linear(c.text_dim, c.hidden_size)
        self.lyric_embs = ops.Embedding(c.lyric_vocab, c.lyric_embed_dim)
        self.lyric_encoder = LyricConformer(c.lyric_embed_dim, c.lyric_width, c.lyric_heads, c.lyric_ffn,
                                            c.lyric_layers, ops)
        self.lyric_proj = ops.Linear(c.lyric_width, c.hidden_size)
        self.projectors = nn.ModuleList([_projector(c.hidden_size, dim, ops) for dim in c.ssl_dims])
        self.proj_in = PatchEmbed(c, ops)
        self.final_layer = FinalLayer(c, ops)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.final_layer.scale_shift_table.dtype

    def encode(self, context: torch.Tensor, lyric_token_idx: torch.Tensor, speaker_embeds: torch.Tensor,
               lyrics_strength: float, text_attention_mask: torch.Tensor | None,
               lyric_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The condition [B, 1 + text + lyrics, width] and its key mask (None when there is no text mask)."""
        speaker = self.speaker_embedder(speaker_embeds)[:, None]
        text = self.genre_embedder(context)
        lyrics = self.lyric_embs(lyric_token_idx.long()).to(device=text.device, dtype=text.dtype)
        lyrics = self.lyric_proj(self.lyric_encoder(lyrics, lyric_mask)) * lyrics_strength
        condition = torch.cat([speaker, text, lyrics], dim=1)
        if text_attention_mask is None:
            return condition, None
        b = condition.shape[0]
        if lyric_mask is None:
            lyric_mask = torch.ones(b, lyrics.shape[1], device=condition.device)
        mask = torch.cat([torch.ones(b, 1, device=condition.device), text_attention_mask.to(condition.device).float(),
                          lyric_mask.to(condition.device).float()], dim=1)
        return condition, mask

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                lyric_token_idx: torch.Tensor, speaker_embeds: torch.Tensor | None = None,
                lyrics_strength: float = 1.0, text_attention_mask: torch.Tensor | None = None,
                lyric_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """The flow velocity [B, out, 16, L] of the latent ``x`` [B, in, 16, L].

        ``timestep`` [B] (ComfyUI's: sigma * 1000), ``context`` [B, T, text_dim]
        (umt5 states), ``lyric_token_idx`` [B, Ly]. ``speaker_embeds`` defaults to
        zeros, as ComfyUI always passes. ``lyric_mask`` [B, Ly] masks padding
        inside the lyric encoder; ``text_attention_mask`` [B, T] also masks the
        cross-attention keys (speaker token always kept, lyrics by
        ``lyric_mask`` or all kept). Other keyword arguments (``control``,
        ``transformer_options``) are accepted and ignored.
        """
        dtype = self.dtype
        b, width = x.shape[0], x.shape[-1]
        x = x.to(dtype)
        context = context.to(device=x.device, dtype=dtype)
        if speaker_embeds is None:
            speaker_embeds = torch.zeros(b, self.config.speaker_dim, device=x.device, dtype=dtype)
        condition, condition_mask = self.encode(context, lyric_token_idx.to(x.device),
                                                speaker_embeds.to(device=x.device, dtype=dtype), lyrics_strength,
                                                text_attention_mask, lyric_mask)
        additive = None
        if condition_mask is not None:
            additive = torch.zeros(condition_mask.shape, device=x.device, dtype=dtype)
            additive = additive.masked_fill(condition_mask != 1, -float("inf"))[:, None, None, :]

        t = timestep.to(x.device).flatten()
        if t.numel() == 1 and b > 1:
            t = t.expand(b)
        embedded_timestep = self.timestep_embedder(timestep_features(t, self.config.time_channels).to(dtype))
        temb = self.t_block(embedded_timestep)

        h = self.proj_in(x)
        head_dim = self.config.head_dim
        rotary = rope(h.shape[1], head_dim, x.device, h.dtype)
        context_rotary = rope(condition.shape[1], head_dim, x.device, condition.dtype)
        for block in self.transformer_blocks:
            h = block(h, temb, condition, rotary, context_rotary, additive)
        return self.final_layer(h, embedded_timestep, width)
