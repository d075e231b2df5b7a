"""The LTX-Video 0.9 transformer: a 2B DiT over latent tokens (one per latent cell, no patching).

Each block runs adaLN-modulated self-attention with rotary positions over
time, height and width, plain cross-attention to the projected T5 states
(masked by the prompt's token mask), and an adaLN-modulated, gated GELU
feed-forward. Norms are parameter-free RMS norms; queries and keys get RMS
norms across all heads. One timestep embedding (per token where a noise mask
keeps frames) gives every block's shifts, scales and gates and the output's.

Rotary angles interleave channel pairs, their frequencies spread
geometrically from 1 to theta over a sixth of the width per axis (the rest
unrotated, in front), at each token's start in seconds and pixels: 8 pixel
frames at the frame rate and 32x32 pixels per latent cell; with
``causal_temporal_positioning`` (a checkpoint setting) frame starts are
shifted by the causal VAE's first frame. Guide frames (LTXVAddGuide) take the
positions recorded in ``keyframe_idxs``.

Module names are ComfyUI's (the released checkpoints' ``patchify_proj``,
``adaln_single``, ``caption_projection``, ``transformer_blocks.N.attn1.q_norm``
...). Widths and depth are read from the file; heads follow ComfyUI's reading
(32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.attention import optimized_attention
from ..flux.layers import timestep_embedding
from ..ltx2.guides import GuideBias, guide_attention, kept_tokens, restore_left_out


@dataclass(frozen=True)
class LTXVConfig:
    in_channels: int = 128
    out_channels: int = 128
    heads: int = 32
    head_dim: int = 64
    cross_attention_dim: int = 2048
    caption_channels: int = 4096
    num_layers: int = 28
    theta: float = 10000.0
    max_pos: tuple[float, float, float] = (20.0, 2048.0, 2048.0)
    vae_scale: tuple[int, int, int] = (8, 32, 32)
    causal_positions: bool = False
    timestep_scale: float = 1000.0

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim

    @classmethod
    def from_unet_config(cls, config: dict[str, Any]) -> LTXVConfig:
        """The network's shape from ComfyUI's ``unet_config`` (:func:`.detect.transformer_config`, plus the
        checkpoint's metadata settings under their ComfyUI names)."""
        return cls(in_channels=config.get("in_channels", 128), out_channels=config.get("out_channels", 128),
                   heads=config.get("num_attention_heads", 32), head_dim=config.get("attention_head_dim", 64),
                   cross_attention_dim=config.get("cross_attention_dim", 2048),
                   caption_channels=config.get("caption_channels", 4096), num_layers=config.get("num_layers", 28),
                   theta=float(config.get("positional_embedding_theta", 10000.0)),
                   max_pos=tuple(float(v) for v in config.get("positional_embedding_max_pos", (20, 2048, 2048))),
                   causal_positions=bool(config.get("causal_temporal_positioning", False)),
                   timestep_scale=float(config.get("timestep_scale_multiplier", 1000.0)))


def rotate(x: torch.Tensor, freqs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Interleaved rotary embedding over the whole width: channel pairs (2i, 2i + 1) turn together."""
    cos, sin = freqs
    pairs = x.unflatten(-1, (-1, 2))
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (x.float() * cos + turned.float() * sin).to(x.dtype)


def rms(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), None, 1e-6)


class Attention(nn.Module):
    def __init__(self, ops: Any, dim: int, heads: int, inner: int, context_dim: int | None = None) -> None:
        super().__init__()
        context_dim = context_dim or dim
        self.heads = heads
        self.to_q = ops.Linear(dim, inner)
        self.to_k = ops.Linear(context_dim, inner)
        self.to_v = ops.Linear(context_dim, inner)
        self.q_norm = ops.RMSNorm(inner, eps=1e-5)
        self.k_norm = ops.RMSNorm(inner, eps=1e-5)
        self.to_out = nn.ModuleList([ops.Linear(inner, dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, freqs: Any = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k = self.q_norm(self.to_q(x)), self.k_norm(self.to_k(context))
        if freqs is not None:
            q, k = rotate(q, freqs), rotate(k, freqs)
        if isinstance(mask, GuideBias):
            return self.to_out[0](mask.attend(optimized_attention, q, k, self.to_v(context), self.heads))
        return self.to_out[0](optimized_attention(q, k, self.to_v(context), self.heads, mask=mask))


class GELUProj(nn.Module):
    def __init__(self, ops: Any, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = ops.Linear(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, ops: Any, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([GELUProj(ops, dim, dim * mult), nn.Dropout(0.0), ops.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class Block(nn.Module):
    def __init__(self, ops: Any, config: LTXVConfig) -> None:
        super().__init__()
        dim = config.dim
        self.attn1 = Attention(ops, dim, config.heads, dim)
        self.attn2 = Attention(ops, dim, config.heads, dim, config.cross_attention_dim)
        self.ff = FeedForward(ops, dim)
        self.scale_shift_table = nn.Parameter(torch.empty(6, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor, emb: torch.Tensor, freqs: Any,
                mask: torch.Tensor | None, self_mask: GuideBias | None = None) -> torch.Tensor:
        table = _ops.cast_weight(self, "scale_shift_table", x)
        values = table[None, None] + emb.reshape(x.shape[0], emb.shape[1], 6, -1)
        shift, scale, gate, shift_ff, scale_ff, gate_ff = values.unbind(dim=2)
        x = x + self.attn1(rms(x) * (1 + scale) + shift, freqs=freqs, mask=self_mask) * gate
        x = x + self.attn2(x, context, mask=mask)
        return x + self.ff(rms(x) * (1 + scale_ff) + shift_ff) * gate_ff


class TimestepEmbedder(nn.Module):
    def __init__(self, ops: Any, dim: int) -> None:
        super().__init__()
        self.linear_1 = ops.Linear(256, dim)
        self.linear_2 = ops.Linear(dim, dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(timestep_embedding(t.float(), 256, time_factor=1.0).to(dtype))))


class Embedding(nn.Module):
    def __init__(self, ops: Any, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(ops, dim)


class AdaLNSingle(nn.Module):
    """Timesteps [B, T] -> (the blocks' six modulation vectors [B, T, 6 * dim], the embedding [B, T, dim])."""

    def __init__(self, ops: Any, dim: int) -> None:
        super().__init__()
        self.emb = Embedding(ops, dim)
        self.linear = ops.Linear(dim, 6 * dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        b = t.shape[0]
        emb = self.emb.timestep_embedder(t.flatten(), dtype)
        return self.linear(F.silu(emb)).view(b, -1, self.linear.out_features), emb.view(b, -1, emb.shape[-1])


class CaptionProjection(nn.Module):
    def __init__(self, ops: Any, cin: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = ops.Linear(cin, dim)
        self.linear_2 = ops.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


def pixel_starts(latent_shape: tuple[int, int, int], scale: tuple[int, int, int], causal: bool,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Where each latent token starts [3, N]: pixel frame, row, column (tokens in frame, row, column order).

    ``causal``: the VAE's first latent frame holds one pixel frame, so frame starts move 1 - 8 earlier,
    clamped at 0 (ComfyUI's ``causal_fix``).
    """
    grid = torch.meshgrid(*(torch.arange(n, dtype=torch.float32, device=device) for n in latent_shape),
                          indexing="ij")
    starts = torch.stack(grid).flatten(1) * torch.tensor(scale, dtype=torch.float32, device=device)[:, None]
    if causal:
        starts[0] = (starts[0] + 1 - scale[0]).clamp(min=0)
    return starts


def rope_freqs(coords: torch.Tensor, maxima: tuple[float, ...], dim: int, theta: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions [B, 3, N] (seconds, pixels, pixels) -> interleaved cos / sin [B, N, dim]."""
    axes = coords.shape[1]
    grid = torch.stack([coords[:, i] / maxima[i] for i in range(axes)], dim=-1)
    steps = dim // (2 * axes)
    base = theta ** torch.linspace(0.0, 1.0, steps, dtype=torch.float32, device=coords.device) * (math.pi / 2)
    freqs = ((grid.unsqueeze(-1) * 2 - 1) * base).transpose(-1, -2).flatten(2)
    cos, sin = freqs.cos().repeat_interleave(2, dim=-1), freqs.sin().repeat_interleave(2, dim=-1)
    pad = dim % (2 * axes)
    if pad:
        cos = torch.cat([torch.ones_like(cos[..., :pad]), cos], dim=-1)
        sin = torch.cat([torch.zeros_like(sin[..., :pad]), sin], dim=-1)
    return cos, sin


class LTXVTransformer(nn.Module):
    def __init__(self, config: LTXVConfig, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.patchify_proj = ops.Linear(c.in_channels, c.dim)
        self.adaln_single = AdaLNSingle(ops, c.dim)
        self.caption_projection = CaptionProjection(ops, c.caption_channels, c.dim)
        self.transformer_blocks = nn.ModuleList(Block(ops, c) for _ in range(c.num_layers))
        self.scale_shift_table = nn.Parameter(torch.empty(2, c.dim))
        self.proj_out = ops.Linear(c.dim, c.out_channels)

    def positions(self, frames: int, height: int, width: int, batch: int, frame_rate: float, device: torch.device,
                  keyframe_idxs: torch.Tensor | None = None) -> torch.Tensor:
        """Token positions [B, 3, N]: seconds, pixel rows, pixel columns; guide frames appended to the latent
        (``keyframe_idxs``: their pixel positions, or start / end pairs) at the end."""
        c = self.config
        coords = pixel_starts((frames, height, width), c.vae_scale, c.causal_positions, device)
        coords = coords.unsqueeze(0).repeat(batch, 1, 1)
        if keyframe_idxs is not None and keyframe_idxs.shape[2] > 0:
            guides = keyframe_idxs[..., 0] if keyframe_idxs.ndim == 4 else keyframe_idxs
            coords[:, :, -guides.shape[2]:] = guides.to(coords)
        coords[:, 0] = coords[:, 0] / frame_rate
        return coords

    def forward_tokens(self, x: torch.Tensor, context: torch.Tensor, timestep: torch.Tensor, coords: torch.Tensor,
                       context_mask: torch.Tensor | None = None,
                       transformer_options: dict[str, Any] | None = None,
                       self_mask: GuideBias | None = None) -> torch.Tensor:
        """Latent tokens [B, N, in_channels], text states [B, L, caption_channels], timesteps [B] or [B, N]
        (already scaled to 0-1000), positions [B, 3, N] -> output tokens [B, N, out_channels].
        ``context_mask``: the text tokens' keep-mask [B, L] (integers), or an additive bias (floats);
        ``self_mask``: how guide tokens weigh in self-attention (LTX-2's ``guides.py``)."""
        c, b = self.config, x.shape[0]
        freqs = tuple(f.to(x.dtype) for f in rope_freqs(coords, c.max_pos, c.dim, c.theta))
        x = self.patchify_proj(x)
        emb, embedded = self.adaln_single(timestep.reshape(b, -1), x.dtype)
        context = self.caption_projection(context.to(x.dtype)).view(b, -1, c.dim)
        mask = None
        if context_mask is not None:  # a keep-mask of 0 / 1 becomes an additive bias; a float one is a bias already
            mask = context_mask.reshape(b, 1, 1, -1)
            if not torch.is_floating_point(mask):
                mask = (mask - 1) * torch.finfo(x.dtype).max
            mask = mask.to(x.dtype)
        options = transformer_options if transformer_options is not None else {}
        replace = options.get("patches_replace", {}).get("dit", {})
        for i, block in enumerate(self.transformer_blocks):
            if ("double_block", i) in replace:
                def original(args: dict[str, Any], block: nn.Module = block) -> dict[str, torch.Tensor]:
                    return {"img": block(args["img"], args["txt"], args["vec"], args["pe"], args["attention_mask"],
                                         args.get("self_attention_mask"))}

                x = replace[("double_block", i)]({"img": x, "txt": context, "attention_mask": mask, "vec": emb,
                                                  "pe": freqs, "transformer_options": options,
                                                  "self_attention_mask": self_mask},
                                                 {"original_block": original})["img"]
            else:
                x = block(x, context, emb, freqs, mask, self_mask)
        values = _ops.cast_weight(self, "scale_shift_table", x)[None, None] + embedded[:, :, None]
        shift, scale = values[:, :, 0], values[:, :, 1]
        return self.proj_out(F.layer_norm(x, (x.shape[-1],), eps=1e-6) * (1 + scale) + shift)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                attention_mask: torch.Tensor | None = None, frame_rate: float = 25.0,
                keyframe_idxs: torch.Tensor | None = None, transformer_options: dict[str, Any] | None = None,
                denoise_mask: torch.Tensor | None = None, guide_attention_entries: list | None = None,
                **kwargs: Any) -> torch.Tensor:
        """One sampler evaluation: latent [B, C, F, H, W], sigmas [B] (or per token [B, N]), text states
        [B, L, caption_channels] and their token mask -> the velocity [B, C, F, H, W]. With guides, tokens the
        noise mask marks below 0 are left out (zero velocity) and ``guide_attention_entries`` weigh the guides'
        attention, as for LTX-2."""
        b, _, frames, height, width = x.shape
        coords = self.positions(frames, height, width, b, float(frame_rate), x.device, keyframe_idxs)
        tokens = x.flatten(2).transpose(1, 2)
        t = timestep.reshape(b, -1) * self.config.timestep_scale
        n = tokens.shape[1]
        kept = kept_tokens(denoise_mask) if keyframe_idxs is not None and keyframe_idxs.shape[2] > 0 else None
        if kept is not None:
            tokens, coords = tokens[:, kept], coords[:, :, kept]
            t = t[:, kept] if t.shape[1] == n else t
        self_mask, _ = guide_attention(guide_attention_entries, keyframe_idxs, kept, tokens.shape[1], tokens.dtype,
                                       x.device)
        out = restore_left_out(self.forward_tokens(tokens, context, t, coords, attention_mask, transformer_options,
                                                   self_mask), kept, n)
        return out.transpose(1, 2).reshape(b, -1, frames, height, width)
