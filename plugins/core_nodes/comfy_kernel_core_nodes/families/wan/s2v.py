"""Wan 2.2 S2V: the Wan transformer driven by speech (wav2vec2 states), a reference image and earlier frames.

Besides the text, the 14B sound-to-video model takes

- ``audio_embed`` [B, layers, width, frames]: every hidden state of the
  wav2vec2 encoder, four per latent frame. A learned softmax-free weighting
  (SiLU, normalised by its sum) mixes the layers; causal 1-d convolutions
  (``casual_audio_encoder``, the released name) bring four audio frames down
  to one latent frame and give per frame a few local tokens plus one global
  vector. After chosen blocks (``audio_injector``) each latent frame's video
  tokens attend to their frame's audio tokens; their input is normalised and
  modulated by the global vector (adaptive layer norm);
- ``reference_latent`` [B, 16, 1, h, w]: the reference image, patch-embedded
  with the video's own convolution and appended after the video tokens, at
  frame position max(30, T + 9) and timestep 0;
- ``reference_motion`` [B, 16, F, h, w]: the latents of the preceding clip;
  their last 19 frames are packed at three resolutions (``frame_packer``: the
  last frame at patch size, the two before at half, sixteen more at a quarter
  of the size, placed at frames -1, -3 and -19..-16) and appended too;
- ``control_video`` [B, 16, T, h, w]: added to the video's patch embeddings
  through ``cond_encoder``.

The three kinds of token are told apart by the rows of ``trainable_cond_mask``.
Timesteps are given per half frame of tokens, so appended tokens keep their
own (zero) timestep through every block's modulation and the head. Names
follow the released weights as ComfyUI loads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...components.rope import rope_angles
from ...model import ops as _ops
from .transformer import CrossAttention, WanConfig, WanTransformer, pad_to_patches, unpatchify

#: after which blocks the released 40-block model injects audio (ComfyUI's ``audio_inject_layers``)
INJECT_LAYERS = (0, 4, 8, 12, 16, 20, 24, 27, 30, 33, 36, 39)
#: reference-motion frames packed at full, half and quarter resolution, nearest frame first
MOTION_BUCKETS = (1, 2, 16)


@dataclass(frozen=True)
class S2VConfig(WanConfig):
    """The Wan layout plus the audio side: wav2vec2 width and state count, audio tokens per latent frame,
    the blocks followed by an audio injection, the control-video channels (0: none)."""

    model_type: str = "s2v"
    audio_dim: int = 1024
    audio_layers: int = 25
    audio_tokens: int = 4
    inject_layers: tuple[int, ...] = INJECT_LAYERS
    cond_dim: int = 16
    motion_channels: int = 16


class CausalConv1d(nn.Module):
    """A 1-d convolution padded on the left only (edge frames repeated), so no frame sees later ones."""

    def __init__(self, chan_in: int, chan_out: int, kernel: int, stride: int, ops: Any) -> None:
        super().__init__()
        self.pad = kernel - 1
        self.conv = ops.Conv1d(chan_in, chan_out, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.pad, 0), mode="replicate"))


class MotionEncoder(nn.Module):
    """Audio features [B, 4T, C] to local tokens [B, T, tokens + 1, dim] and a global vector [B, T, 1, dim].

    Two causal convolutions of stride 2 take four audio frames to one latent
    frame; the local branch splits its first convolution's channels into one
    group per token, the global branch ends in a linear layer. A learned
    padding token is appended to every frame's local tokens.
    """

    def __init__(self, in_dim: int, dim: int, tokens: int, ops: Any) -> None:
        super().__init__()
        self.tokens = tokens
        self.conv1_local = CausalConv1d(in_dim, dim // 4 * tokens, 3, 1, ops)
        self.conv1_global = CausalConv1d(in_dim, dim // 4, 3, 1, ops)
        self.conv2 = CausalConv1d(dim // 4, dim // 2, 3, 2, ops)
        self.conv3 = CausalConv1d(dim // 2, dim, 3, 2, ops)
        self.final_linear = ops.Linear(dim, dim)
        self.padding_tokens = nn.Parameter(torch.empty(1, 1, 1, dim))

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, 4T] after the first convolution -> [N, T, dim], each step normed (no affine) and SiLU'd."""
        x = F.silu(F.layer_norm(x.transpose(1, 2), x.shape[1:2], eps=1e-6)).transpose(1, 2)
        x = self.conv2(x).transpose(1, 2)
        x = F.silu(F.layer_norm(x, x.shape[-1:], eps=1e-6)).transpose(1, 2)
        x = self.conv3(x).transpose(1, 2)
        return F.silu(F.layer_norm(x, x.shape[-1:], eps=1e-6))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = features.shape[0]
        x = features.transpose(1, 2)
        local = self.conv1_local(x)
        local = local.unflatten(1, (self.tokens, -1)).flatten(0, 1)
        local = self._downsample(local)
        local = local.unflatten(0, (b, self.tokens)).transpose(1, 2)
        padding = _ops.cast_weight(self, "padding_tokens", local).expand(b, local.shape[1], 1, -1)
        local = torch.cat([local, padding], dim=2)
        glob = self.final_linear(self._downsample(self.conv1_global(x)))
        return glob.unsqueeze(2), local


class CausalAudioEncoder(nn.Module):
    """The wav2vec2 layers mixed by learned weights, then :class:`MotionEncoder`."""

    def __init__(self, c: S2VConfig, ops: Any) -> None:
        super().__init__()
        self.encoder = MotionEncoder(c.audio_dim, c.dim, c.audio_tokens, ops)
        self.weights = nn.Parameter(torch.empty(1, c.audio_layers, 1, 1))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = F.silu(_ops.cast_weight(self, "weights", features))
        mixed = (features * weights / weights.sum(dim=1, keepdim=True)).sum(dim=1)
        return self.encoder(mixed.transpose(1, 2))


class AdaptiveNorm(nn.Module):
    """Layer norm (no affine) whose shift and scale come from a conditioning vector."""

    def __init__(self, dim: int, ops: Any) -> None:
        super().__init__()
        self.linear = ops.Linear(dim, dim * 2)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.linear(F.silu(cond)).unsqueeze(1).chunk(2, dim=-1)
        return F.layer_norm(x, x.shape[-1:], eps=1e-5) * (1 + scale) + shift


class AudioInjector(nn.Module):
    """Cross-attention of each latent frame's video tokens to that frame's audio tokens, after chosen blocks."""

    def __init__(self, c: S2VConfig, ops: Any) -> None:
        super().__init__()
        self.slots = {block: i for i, block in enumerate(c.inject_layers)}
        self.injector = nn.ModuleList([CrossAttention(c, ops, image=False) for _ in c.inject_layers])
        self.injector_adain_layers = nn.ModuleList([AdaptiveNorm(c.dim, ops) for _ in c.inject_layers])

    def forward(self, x: torch.Tensor, block: int, audio: torch.Tensor, audio_global: torch.Tensor,
                video_tokens: int) -> torch.Tensor:
        slot = self.slots.get(block)
        if slot is None:
            return x
        b, frames = audio.shape[:2]
        video = x[:, :video_tokens].reshape(b * frames, video_tokens // frames, x.shape[-1])
        video = self.injector_adain_layers[slot](video, audio_global.flatten(0, 1)[:, 0])
        out = self.injector[slot](video, audio.flatten(0, 1))
        x[:, :video_tokens] += out.reshape(b, video_tokens, -1)
        return x


class FramePacker(nn.Module):
    """The last 19 latent frames of the preceding clip as tokens at three resolutions, with their positions."""

    def __init__(self, c: S2VConfig, ops: Any) -> None:
        super().__init__()
        self.channels = c.motion_channels
        self.proj = ops.Conv3d(c.motion_channels, c.dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.proj_2x = ops.Conv3d(c.motion_channels, c.dim, kernel_size=(2, 4, 4), stride=(2, 4, 4))
        self.proj_4x = ops.Conv3d(c.motion_channels, c.dim, kernel_size=(4, 8, 8), stride=(4, 8, 8))

    def forward(self, motion: torch.Tensor, rope: Any) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, frames, h, w = motion.shape
        total = sum(MOTION_BUCKETS)
        padded = motion.new_zeros(b, self.channels, total, h, w)
        keep = min(total, frames)
        if keep > 0:
            padded[:, :, -keep:] = motion[:, :, -keep:]
        far, near, last = padded.split(MOTION_BUCKETS[::-1], dim=2)
        tokens, positions = [], []
        for proj, part, start in ((self.proj, last, -1), (self.proj_2x, near, -3), (self.proj_4x, far, -19)):
            out = proj(part)
            tokens.append(out.flatten(2).transpose(1, 2))
            steps = (None, None) if proj is self.proj else out.shape[3:]
            positions.append(rope(out.shape[2], h, w, start, *steps, motion.device))
        return torch.cat(tokens, dim=1), torch.cat(positions, dim=1)


class WanS2VTransformer(WanTransformer):
    """``forward(x, timestep, context, audio_embed=, reference_latent=, reference_motion=, control_video=)``."""

    def __init__(self, config: S2VConfig, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__(config, ops, compute_dtype)
        c = config
        self.trainable_cond_mask = ops.Embedding(3, c.dim)
        self.casual_audio_encoder = CausalAudioEncoder(c, ops)
        if c.cond_dim > 0:
            self.cond_encoder = ops.Conv3d(c.cond_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.audio_injector = AudioInjector(c, ops)
        self.frame_packer = FramePacker(c, ops)

    def grid_rope(self, t: int, h: int, w: int, t_start: float, steps_h: int | None, steps_w: int | None,
                  device: Any) -> torch.Tensor:
        """Rotations of a t x h x w latent grid at ``steps_h`` x ``steps_w`` evenly spaced positions (None: every patch).

        Frames count from ``t_start``; rows and columns span the full-size
        patch grid (0 to its last index) whatever the sampling, so coarser
        tokens sit between the fine ones.
        """
        pt, ph, pw = self.patch_size
        t_len, h_len, w_len = (t + pt // 2) // pt, (h + ph // 2) // ph, (w + pw // 2) // pw
        axes = (torch.linspace(t_start, t_start + t_len - 1, t_len, device=device),
                torch.linspace(0, h_len - 1, steps_h or h_len, device=device),
                torch.linspace(0, w_len - 1, steps_w or w_len, device=device))
        ids = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(1, -1, 3)
        return rope_angles(ids, self.config.axes_dims).unsqueeze(2)

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                 clip_fea: torch.Tensor | None = None, transformer_options: dict[str, Any] | None = None,
                 audio_embed: torch.Tensor | None = None, reference_latent: torch.Tensor | None = None,
                 reference_motion: torch.Tensor | None = None, control_video: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        dtype = self.dtype
        _, _, t, h, w = x.shape
        x = pad_to_patches(x, self.patch_size)
        rope = self.rope(t, h, w, x.device, options.get("rope_options"))

        audio = audio_global = None
        if audio_embed is not None:
            audio_global, audio = self.casual_audio_encoder(audio_embed[..., : x.shape[2] * 4].to(dtype))

        tokens = self.patch_embedding(x.to(dtype))
        if control_video is not None and hasattr(self, "cond_encoder"):
            tokens = tokens + self.cond_encoder(control_video.to(device=x.device, dtype=dtype))
        grid = tokens.shape[2:]
        tokens = tokens.flatten(2).transpose(1, 2)
        video_tokens = tokens.shape[1]
        ts = timestep.to(x.device)
        if ts.ndim == 1:
            ts = ts.unsqueeze(1).repeat(1, grid[0])
        marks = _ops.cast_weight(self.trainable_cond_mask, "weight", tokens)
        tokens = tokens + marks[0]

        if reference_latent is not None:
            ref = reference_latent.to(device=x.device, dtype=dtype)
            ref_tokens = self.patch_embedding(ref).flatten(2).transpose(1, 2) + marks[1]
            rt, rh, rw = ref.shape[-3:]
            ref_rope = self.grid_rope(rt, rh, rw, max(30, t + 9), None, None, x.device)
            tokens = torch.cat([tokens, ref_tokens], dim=1)
            rope = torch.cat([rope, ref_rope], dim=1)
            ts = torch.cat([ts, ts.new_zeros(ts.shape[0], rt)], dim=1)
        if reference_motion is not None:
            motion_tokens, motion_rope = self.frame_packer(reference_motion.to(device=x.device, dtype=dtype),
                                                           self.grid_rope)
            tokens = torch.cat([tokens, motion_tokens + marks[2]], dim=1)
            rope = torch.cat([rope, motion_rope], dim=1)
            # a timestep per half frame: the packed motion tokens fill one and a half frames
            ts = torch.cat([torch.repeat_interleave(ts, 2, dim=1), ts.new_zeros(ts.shape[0], 3)], dim=1)

        e, e0 = self.time_modulation(ts, dtype)
        context = self.text_embedding(context.to(dtype))

        def inject_audio(i: int, tokens: torch.Tensor) -> torch.Tensor:
            return tokens if audio is None else self.audio_injector(tokens, i, audio, audio_global, video_tokens)

        tokens = self.run_blocks(tokens, e0, rope, context, options, after=inject_audio)
        return unpatchify(self.head(tokens, e)[:, :video_tokens], grid, self.patch_size, (t, h, w))

