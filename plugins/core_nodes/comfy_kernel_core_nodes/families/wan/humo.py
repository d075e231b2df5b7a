"""HuMo: the Wan 2.1 transformer driven by a reference image and speech (Whisper states), per latent frame.

Besides the text, HuMo (17B on Wan 2.1 14B, 1.7B on 1.3B) takes

- ``reference_latent`` [B, 16, F, h, w]: the reference image's latents,
  patch-embedded with the video's own convolution and appended after the
  video tokens as the frames following the video (rotary frame positions T,
  T + 1, ...), with the video's timestep; their outputs are dropped;
- ``audio_embed`` [B, T, window, groups, width]: per latent frame a window of
  Whisper states (eight 25-a-second frames of five layer averages, 1280 wide
  in the released model). ``audio_proj`` flattens each window and turns it
  into a few tokens (two ReLU layers, a projection to tokens x 1536, a layer
  norm); the reference frames get the tokens of an all-zero window. In every
  block, after the text cross-attention, each latent frame's tokens attend to
  their frame's audio tokens only (``audio_cross_attn_wrapper``: a layer norm,
  then attention whose keys and values come from the 1536-wide tokens).

The tokens are grouped into the audio's frames as ComfyUI groups them: the
token sequence is cut into as many equal runs as there are audio frames.
Where the counts do not divide (ComfyUI's reshape fails there; it happens
when WanHuMoImageToVideo gives its all-zero audio, one frame longer than the
video), each latent frame takes the audio frame of the same index, the last
one past the end: for the all-zero audio, whose frames are all alike, that is
what any grouping gives. Names follow the released weights as ComfyUI loads
them (``audio_proj.audio_proj_glob_1.layer``,
``blocks.N.audio_cross_attn_wrapper.audio_cross_attn.k``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.attention import optimized_attention
from .transformer import (
    WanBlock,
    WanConfig,
    WanTransformer,
    pad_to_patches,
    repeat_over_tokens,
    unpatchify,
)

#: Whisper frames per latent frame and averaged layer groups in an audio window (ComfyUI's fixed sizes)
AUDIO_WINDOW, AUDIO_GROUPS = 8, 5


@dataclass(frozen=True)
class HumoConfig(WanConfig):
    """The Wan layout plus the audio side: Whisper state width, the projection's hidden width, the audio
    token width and the tokens per latent frame."""

    model_type: str = "humo"
    audio_width: int = 1280
    audio_hidden: int = 512
    audio_dim: int = 1536
    audio_tokens: int = 16


class _Layer(nn.Module):
    """A layer kept under ``.layer`` (the released weights' names)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class AudioProjection(nn.Module):
    """Audio windows [B, F, window, groups, width] -> tokens [B, F * tokens, audio_dim], frame by frame."""

    def __init__(self, c: HumoConfig, ops: Any) -> None:
        super().__init__()
        self.tokens, self.dim = c.audio_tokens, c.audio_dim
        self.audio_proj_glob_1 = _Layer(ops.Linear(AUDIO_WINDOW * AUDIO_GROUPS * c.audio_width, c.audio_hidden))
        self.audio_proj_glob_2 = _Layer(ops.Linear(c.audio_hidden, c.audio_hidden))
        self.audio_proj_glob_3 = _Layer(ops.Linear(c.audio_hidden, c.audio_tokens * c.audio_dim))
        self.audio_proj_glob_norm = _Layer(ops.LayerNorm(c.audio_dim))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        b, frames = audio.shape[:2]
        x = F.relu(self.audio_proj_glob_1(audio.reshape(b * frames, -1)))
        x = F.relu(self.audio_proj_glob_2(x))
        x = self.audio_proj_glob_norm(self.audio_proj_glob_3(x).view(b * frames, self.tokens, self.dim))
        return x.reshape(b, frames * self.tokens, self.dim)


class AudioAttention(nn.Module):
    """Each latent frame's tokens attend to the audio tokens of their frame."""

    def __init__(self, c: HumoConfig, ops: Any) -> None:
        super().__init__()
        self.heads, self.tokens = c.num_heads, c.audio_tokens
        self.q = ops.Linear(c.dim, c.dim)
        self.k = ops.Linear(c.audio_dim, c.dim)
        self.v = ops.Linear(c.audio_dim, c.dim)
        self.o = ops.Linear(c.dim, c.dim)
        self.norm_q = ops.RMSNorm(c.dim, eps=c.eps)
        self.norm_k = ops.RMSNorm(c.dim, eps=c.eps)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, frame_tokens: int) -> torch.Tensor:
        b, n, d = x.shape
        q = self.norm_q(self.q(x))
        k = self.norm_k(self.k(audio)).view(b, -1, self.tokens, d)
        v = self.v(audio).view(b, -1, self.tokens, d)
        frames = k.shape[1]
        if n % frames:  # one audio frame per latent frame (see the module docstring)
            index = torch.arange(n // frame_tokens, device=x.device).clamp(max=frames - 1)
            k, v, frames = k[:, index], v[:, index], len(index)
        out = optimized_attention(q.reshape(b * frames, n // frames, d), k.flatten(0, 1), v.flatten(0, 1),
                                  self.heads)
        return self.o(out.reshape(b, n, d))


class AudioCrossAttention(nn.Module):
    def __init__(self, c: HumoConfig, ops: Any) -> None:
        super().__init__()
        self.audio_cross_attn = AudioAttention(c, ops)
        self.norm1_audio = ops.LayerNorm(c.dim, eps=c.eps, elementwise_affine=True)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, frame_tokens: int) -> torch.Tensor:
        return x + self.audio_cross_attn(self.norm1_audio(x), audio, frame_tokens)


class HumoBlock(WanBlock):
    """The Wan block with the audio cross-attention between the text cross-attention and the feed-forward."""

    def __init__(self, c: HumoConfig, ops: Any) -> None:
        super().__init__(c, ops)
        self.audio_cross_attn_wrapper = AudioCrossAttention(c, ops)

    def forward(self, x: torch.Tensor, e: torch.Tensor, rope: torch.Tensor, context: torch.Tensor,
                image_tokens: int | None = None, audio: torch.Tensor | None = None,
                frame_tokens: int = 1) -> torch.Tensor:
        mod = _ops.cast_weight(self, "modulation", x)
        shift1, scale1, gate1, shift2, scale2, gate2 = (
            repeat_over_tokens(m, x) for m in (mod.unsqueeze(0) + e).unbind(2))
        y = self.self_attn(torch.addcmul(shift1, self.norm1(x), 1 + scale1), rope)
        x = torch.addcmul(x, y, gate1)
        x = x + self.cross_attn(self.norm3(x), context, image_tokens)
        if audio is not None:
            x = self.audio_cross_attn_wrapper(x, audio, frame_tokens)
        y = self.ffn(torch.addcmul(shift2, self.norm2(x), 1 + scale2))
        return torch.addcmul(x, y, gate2)


class WanHumoTransformer(WanTransformer):
    """``forward(x, timestep, context, audio_embed=, reference_latent=)`` -> velocity like ``x``."""

    block_class = HumoBlock

    def __init__(self, config: HumoConfig, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__(config, ops, compute_dtype)
        self.audio_proj = AudioProjection(config, ops)

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                 clip_fea: torch.Tensor | None = None, transformer_options: dict[str, Any] | None = None,
                 audio_embed: torch.Tensor | None = None, reference_latent: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        dtype = self.dtype
        _, _, t, h, w = x.shape
        x = pad_to_patches(x, self.patch_size)
        rope_options = options.get("rope_options")
        rope = self.rope(t, h, w, x.device, rope_options)

        tokens = self.patch_embedding(x.to(dtype))
        grid = tokens.shape[2:]
        frame_tokens = grid[1] * grid[2]
        tokens = tokens.flatten(2).transpose(1, 2)
        video_tokens = tokens.shape[1]
        ref_frames = 0
        if reference_latent is not None:
            ref = pad_to_patches(reference_latent.to(device=x.device, dtype=dtype), self.patch_size)
            ref_tokens = self.patch_embedding(ref)
            ref_frames = ref_tokens.shape[2]
            tokens = torch.cat([tokens, ref_tokens.flatten(2).transpose(1, 2)], dim=1)
            rope = torch.cat([rope, self.rope(ref.shape[2], h, w, x.device, rope_options, t_start=x.shape[2])],
                             dim=1)

        e, e0 = self.time_modulation(timestep.to(x.device), dtype)
        context = self.text_embedding(context.to(dtype))

        audio = None
        if audio_embed is not None:
            audio = audio_embed.to(device=x.device, dtype=dtype)
            if ref_frames:
                audio = torch.cat([audio, audio.new_zeros(audio.shape[0], ref_frames, *audio.shape[2:])], dim=1)
            audio = self.audio_proj(audio)

        tokens = self.run_blocks(tokens, e0, rope, context, options, (None, audio, frame_tokens))
        return unpatchify(self.head(tokens, e)[:, :video_tokens], grid, self.patch_size, (t, h, w))
