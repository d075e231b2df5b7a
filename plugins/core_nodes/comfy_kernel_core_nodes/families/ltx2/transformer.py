"""The LTX-2 audio-video transformer: a video stream and an audio stream that attend to each other in every block.

Each block runs, per stream, adaLN-modulated self-attention (rotary positions
over time, height and width for video, time for audio), cross-attention to
the stream's own text tokens, then audio-to-video and video-to-audio
cross-attention (rotary positions over time only, on the audio stream's head
layout) modulated by their own timestep embeddings, and a gated feed-forward.
Norms are parameter-free RMS norms; queries and keys get RMS norms across all
heads. Rotary angles (rope.py) are taken at the middle of each token's span
in seconds (video: latent frames of 8 pixel frames at ``fps``, 32x32 pixels;
audio: latent frames of 4 mel frames of 10 ms), both shifted by the causal
VAEs' first frame.

LTX-2.3 adds, found from the keys: per-head sigmoid gates on every attention
(``to_gate_logits``); text modulation: three more rows in each block's table
shift, scale and gate the text cross-attention's queries while the text
itself is shifted and scaled by a per-block table plus an embedding of the
stream's sigma (``prompt_adaln_single``, absent from LTX-2.5, whose table
alone then applies); no caption projection, the text connectors
(connectors.py) running here instead on the text encoder's projected
features; and the cross-modal modulation of each stream taken from the other
stream's sigma. LTX-2.5's video feed-forward has no biases, and it adds a learned marker
(``keyframes_abs_pos_embedding``) to the tokens of latent frames that hold a
single pixel frame (those starting at pixel frame 0; guides excepted).

``forward`` is the sampler's interface: the packed audio + video latent of
``model/nested.py`` with the parts' shapes, a timestep per stream (per token
where frames are kept), guide-frame positions (``keyframe_idxs``) and the text
states of both streams side by side.

Module names are ComfyUI's (the released checkpoints' ``patchify_proj``,
``adaln_single``, ``av_ca_video_scale_shift_adaln_single``,
``transformer_blocks.N.audio_to_video_attn.q_norm``,
``scale_shift_table_a2v_ca_video`` ...). Widths and depth are read from the
file; heads follow ComfyUI's reading (32 per stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.attention import optimized_attention
from ..flux.layers import timestep_embedding
from .connectors import Connector
from .guides import GuideBias, guide_attention, kept_tokens, restore_left_out
from .layers import FeedForward, RMSNorm, head_gates, rms
from .rope import rope_freqs, rotate


@dataclass(frozen=True)
class LTX2Config:
    in_channels: int = 128
    out_channels: int = 128
    dim: int = 4096
    heads: int = 32
    audio_in_channels: int = 128
    audio_out_channels: int = 128
    audio_dim: int = 2048
    audio_heads: int = 32
    caption_channels: int = 3840
    num_layers: int = 48
    theta: float = 10000.0
    max_frames: int = 20
    max_size: int = 2048
    vae_scale: tuple[int, int, int] = (8, 32, 32)
    audio_scale: int = 4
    sample_rate: int = 16000
    hop_length: int = 160
    causal_offset: int = 1
    #: LTX-2.3's per-head attention gates
    gated_attention: bool = False
    #: LTX-2.3's text modulation (9-row block tables, per-block prompt tables)
    prompt_modulation: bool = False
    #: the prompt tables' timestep embedding (``prompt_adaln_single``); LTX-2.5 has none
    prompt_adaln: bool = False
    #: LTX-2's caption projection; LTX-2.3 feeds the connectors' output as it is
    caption_projection: bool = True
    ff_bias: bool = True
    audio_ff_bias: bool = True
    #: each stream's cross-modal modulation from the other stream's sigma (LTX-2.3)
    cross_timestep: bool = False
    #: rotary layout: split halves per head (the released files' ``rope_type``) or interleaved pairs
    rope_split: bool = False
    #: the text connectors inside the diffusion model (LTX-2.3): depth, registers, heads, gates
    connector_layers: int = 0
    connector_registers: int = 128
    connector_heads: int = 0
    audio_connector_heads: int = 0
    connector_gated: bool = False
    #: LTX-2.5's learned marker added to the tokens of latent frames that hold a single pixel frame
    keyframe_embedding: bool = False

    @classmethod
    def from_unet_config(cls, config: dict[str, Any]) -> LTX2Config:
        """The network's shape from ComfyUI's ``unet_config`` (see :func:`.detect.transformer_config`)."""
        modulation = bool(config.get("prompt_modulation"))
        connector = config.get("connector") or {}
        return cls(in_channels=config["in_channels"], out_channels=config["out_channels"],
                   dim=config["num_attention_heads"] * config["attention_head_dim"],
                   heads=config["num_attention_heads"], audio_in_channels=config["audio_in_channels"],
                   audio_out_channels=config["audio_out_channels"],
                   audio_dim=config["audio_num_attention_heads"] * config["audio_attention_head_dim"],
                   audio_heads=config["audio_num_attention_heads"],
                   caption_channels=config.get("caption_channels") or 0, num_layers=config["num_layers"],
                   gated_attention=bool(config.get("gated_attention")), prompt_modulation=modulation,
                   prompt_adaln=bool(config.get("prompt_adaln")),
                   caption_projection=config.get("caption_channels") is not None,
                   ff_bias=config.get("ff_bias", True), audio_ff_bias=config.get("audio_ff_bias", True),
                   cross_timestep=modulation, rope_split=config.get("rope_type", "interleaved") == "split",
                   connector_layers=connector.get("layers", 0), connector_registers=connector.get("registers", 128),
                   connector_heads=connector.get("heads", 0), audio_connector_heads=connector.get("audio_heads", 0),
                   connector_gated=bool(connector.get("gated")),
                   keyframe_embedding=bool(config.get("keyframes_abs_pos_embedding")))


class Attention(nn.Module):
    def __init__(self, ops: Any, dim: int, heads: int, inner: int, context_dim: int | None = None,
                 gated: bool = False) -> None:
        super().__init__()
        context_dim = context_dim or dim
        self.heads = heads
        self.to_q = ops.Linear(dim, inner)
        self.to_k = ops.Linear(context_dim, inner)
        self.to_v = ops.Linear(context_dim, inner)
        self.q_norm = RMSNorm(inner)
        self.k_norm = RMSNorm(inner)
        self.to_out = nn.ModuleList([ops.Linear(inner, dim)])
        self.to_gate_logits = ops.Linear(dim, heads) if gated else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, q_rope: Any = None, k_rope: Any = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k = self.q_norm(self.to_q(x)), self.k_norm(self.to_k(context))
        if q_rope is not None:
            q, k = rotate(q, q_rope), rotate(k, k_rope if k_rope is not None else q_rope)
        if isinstance(mask, GuideBias):
            out = mask.attend(optimized_attention, q, k, self.to_v(context), self.heads)
        else:
            out = optimized_attention(q, k, self.to_v(context), self.heads, mask=mask)
        return self.to_out[0](head_gates(self.to_gate_logits, x, out, self.heads))


def modulation(table: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A block's table [n, D] plus a timestep embedding [B, T, n * D] -> n tensors [B, T, D]."""
    b, t = emb.shape[:2]
    values = table[None, None].to(emb) + emb.reshape(b, t, table.shape[0], -1)
    return values.unbind(dim=2)


class Block(nn.Module):
    def __init__(self, ops: Any, config: LTX2Config) -> None:
        super().__init__()
        dim, adim, gated = config.dim, config.audio_dim, config.gated_attention
        self.attn1 = Attention(ops, dim, config.heads, dim, gated=gated)
        self.audio_attn1 = Attention(ops, adim, config.audio_heads, adim, gated=gated)
        self.attn2 = Attention(ops, dim, config.heads, dim, dim, gated=gated)
        self.audio_attn2 = Attention(ops, adim, config.audio_heads, adim, adim, gated=gated)
        self.audio_to_video_attn = Attention(ops, dim, config.audio_heads, adim, adim, gated=gated)
        self.video_to_audio_attn = Attention(ops, adim, config.audio_heads, adim, dim, gated=gated)
        self.ff = FeedForward(ops, dim, bias=config.ff_bias)
        self.audio_ff = FeedForward(ops, adim, bias=config.audio_ff_bias)
        rows = 9 if config.prompt_modulation else 6
        self.scale_shift_table = nn.Parameter(torch.empty(rows, dim))
        self.audio_scale_shift_table = nn.Parameter(torch.empty(rows, adim))
        if config.prompt_modulation:
            self.prompt_scale_shift_table = nn.Parameter(torch.empty(2, dim))
            self.audio_prompt_scale_shift_table = nn.Parameter(torch.empty(2, adim))
        self.scale_shift_table_a2v_ca_video = nn.Parameter(torch.empty(5, dim))
        self.scale_shift_table_a2v_ca_audio = nn.Parameter(torch.empty(5, adim))

    def _table(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return _ops.cast_weight(self, name, x)

    def _text(self, attn: Attention, x: torch.Tensor, context: torch.Tensor, mask: Any, values: tuple,
              prompt_table: str, prompt_emb: torch.Tensor | None) -> torch.Tensor:
        """The text cross-attention's residual; with LTX-2.3's modulation of the queries and of the text."""
        if len(values) == 6:
            return attn(rms(x), context, mask=mask)
        shift_q, scale_q, gate_q = values[6:]
        table = self._table(prompt_table, x)
        if prompt_emb is None:
            shift_kv, scale_kv = table[None, None].unbind(dim=2)
        else:
            shift_kv, scale_kv = modulation(table, prompt_emb)
        return attn(rms(x) * (1 + scale_q) + shift_q, context * (1 + scale_kv) + shift_kv, mask=mask) * gate_q

    def forward(self, x: torch.Tensor, a: torch.Tensor, context: torch.Tensor, audio_context: torch.Tensor,
                emb: dict[str, Any], rope: dict[str, Any], masks: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        v = modulation(self._table("scale_shift_table", x), emb["video"])
        shift, scale, gate, shift_ff, scale_ff, gate_ff = v[:6]
        x = x + self.attn1(rms(x) * (1 + scale) + shift, q_rope=rope["video"], mask=masks.get("guides")) * gate
        av = modulation(self._table("audio_scale_shift_table", a), emb["audio"])
        a_shift, a_scale, a_gate, a_shift_ff, a_scale_ff, a_gate_ff = av[:6]
        a = a + self.audio_attn1(rms(a) * (1 + a_scale) + a_shift, q_rope=rope["audio"]) * a_gate

        x = x + self._text(self.attn2, x, context, masks.get("video"), v, "prompt_scale_shift_table",
                           emb.get("video_prompt"))
        a = a + self._text(self.audio_attn2, a, audio_context, masks.get("audio"), av,
                           "audio_prompt_scale_shift_table", emb.get("audio_prompt"))

        vt, at = self._table("scale_shift_table_a2v_ca_video", x), self._table("scale_shift_table_a2v_ca_audio", a)
        v_a2v_scale, v_a2v_shift, v_v2a_scale, v_v2a_shift = modulation(vt[:4], emb["video_cross"])
        (a2v_gate,) = modulation(vt[4:], emb["video_gate"])
        a_a2v_scale, a_a2v_shift, a_v2a_scale, a_v2a_shift = modulation(at[:4], emb["audio_cross"])
        (v2a_gate,) = modulation(at[4:], emb["audio_gate"])
        xn, an = rms(x), rms(a)
        x = x + a2v_gate * self.audio_to_video_attn(xn * (1 + v_a2v_scale) + v_a2v_shift,
                                                    an * (1 + a_a2v_scale) + a_a2v_shift,
                                                    q_rope=rope["video_cross"], k_rope=rope["audio_cross"])
        a = a + v2a_gate * self.video_to_audio_attn(an * (1 + a_v2a_scale) + a_v2a_shift,
                                                    xn * (1 + v_v2a_scale) + v_v2a_shift,
                                                    q_rope=rope["audio_cross"], k_rope=rope["video_cross"])

        x = x + self.ff(rms(x) * (1 + scale_ff) + shift_ff) * gate_ff
        a = a + self.audio_ff(rms(a) * (1 + a_scale_ff) + a_shift_ff) * a_gate_ff
        return x, a


class TimestepEmbedder(nn.Module):
    def __init__(self, ops: Any, dim: int) -> None:
        super().__init__()
        self.linear_1 = ops.Linear(256, dim)
        self.linear_2 = ops.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(timestep_embedding(t, 256, time_factor=1.0).to(t.dtype))))


class Embedding(nn.Module):
    def __init__(self, ops: Any, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(ops, dim)


class AdaLNSingle(nn.Module):
    """Timestep -> (``n`` modulation vectors [B, T, n * dim], the embedding [B, T, dim])."""

    def __init__(self, ops: Any, dim: int, n: int) -> None:
        super().__init__()
        self.emb = Embedding(ops, dim)
        self.linear = ops.Linear(dim, n * dim)

    def forward(self, t: torch.Tensor, batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.emb.timestep_embedder(t.flatten().to(dtype))
        return self.linear(F.silu(emb)).view(batch, -1, self.linear.out_features), emb.view(batch, -1, emb.shape[-1])


class CaptionProjection(nn.Module):
    def __init__(self, ops: Any, cin: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = ops.Linear(cin, dim)
        self.linear_2 = ops.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


def pixel_bounds(latent_shape: tuple[int, int, int], scale: tuple[int, int, int], batch: int = 1,
                 device: torch.device | str = "cpu", causal: bool = True) -> torch.Tensor:
    """The pixel spans [B, 3, N, (start, end)] of latent tokens (frames, rows, columns, in token order).

    ``causal``: the VAE's first latent frame holds one pixel frame, so frame spans start 1 - 8 earlier,
    clamped at 0 (ComfyUI's ``causal_fix``).
    """
    scale_t = torch.tensor(scale, dtype=torch.float32, device=device)
    grid = torch.meshgrid(*(torch.arange(n, dtype=torch.float32, device=device) for n in latent_shape),
                          indexing="ij")
    starts = torch.stack(grid).flatten(1) * scale_t[:, None]
    bounds = torch.stack([starts, starts + scale_t[:, None]], dim=-1)
    if causal:
        bounds[0] = (bounds[0] + 1 - scale[0]).clamp(min=0)
    return bounds.unsqueeze(0).repeat(batch, 1, 1, 1)


class LTX2Transformer(nn.Module):
    def __init__(self, config: LTX2Config, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        c = self.config = config
        dim, adim = c.dim, c.audio_dim
        self.patchify_proj = ops.Linear(c.in_channels, dim)
        if c.keyframe_embedding:
            self.keyframes_abs_pos_embedding = nn.Parameter(torch.empty(1, dim))
        self.audio_patchify_proj = ops.Linear(c.audio_in_channels, adim)
        if c.caption_projection:
            self.caption_projection = CaptionProjection(ops, c.caption_channels, dim)
            self.audio_caption_projection = CaptionProjection(ops, c.caption_channels, adim)
        rows = 9 if c.prompt_modulation else 6
        self.adaln_single = AdaLNSingle(ops, dim, rows)
        self.audio_adaln_single = AdaLNSingle(ops, adim, rows)
        if c.prompt_adaln:
            self.prompt_adaln_single = AdaLNSingle(ops, dim, 2)
            self.audio_prompt_adaln_single = AdaLNSingle(ops, adim, 2)
        self.av_ca_video_scale_shift_adaln_single = AdaLNSingle(ops, dim, 4)
        self.av_ca_audio_scale_shift_adaln_single = AdaLNSingle(ops, adim, 4)
        self.av_ca_a2v_gate_adaln_single = AdaLNSingle(ops, dim, 1)
        self.av_ca_v2a_gate_adaln_single = AdaLNSingle(ops, adim, 1)
        if c.connector_layers:
            self.video_embeddings_connector = Connector(ops, dim, c.connector_layers, c.connector_registers,
                                                        c.connector_heads, c.connector_gated)
            self.audio_embeddings_connector = Connector(ops, adim, c.connector_layers, c.connector_registers,
                                                        c.audio_connector_heads, c.connector_gated)
        self.transformer_blocks = nn.ModuleList(Block(ops, c) for _ in range(c.num_layers))
        self.scale_shift_table = nn.Parameter(torch.empty(2, dim))
        self.audio_scale_shift_table = nn.Parameter(torch.empty(2, adim))
        self.proj_out = ops.Linear(dim, c.out_channels)
        self.audio_proj_out = ops.Linear(adim, c.audio_out_channels)

    def video_bounds(self, frames: int, height: int, width: int, batch: int, device: torch.device) -> torch.Tensor:
        """Token spans [B, 3, N, (start, end)] in pixels. Guide frames appended to the latent get the spans
        LTXVAddGuide records (``keyframe_idxs``) instead."""
        return pixel_bounds((frames, height, width), self.config.vae_scale, batch, device)

    def video_spans(self, frames: int, height: int, width: int, batch: int, device: torch.device,
                    keyframe_idxs: torch.Tensor | None = None, kept: torch.Tensor | None = None) -> torch.Tensor:
        """Token spans [B, 3, N, (start, end)] in pixel frames and pixels, guides' from ``keyframe_idxs``; only the
        ``kept`` tokens' where some are left out."""
        bounds = self.video_bounds(frames, height, width, batch, device)
        if keyframe_idxs is not None and keyframe_idxs.shape[2] > 0:
            bounds[:, :, -keyframe_idxs.shape[2]:] = keyframe_idxs.to(bounds)
        return bounds if kept is None else bounds[:, :, kept]

    def audio_coords(self, frames: int, batch: int, device: torch.device, reference: int = 0) -> torch.Tensor:
        """Token middles [B, 1, reference + frames] in seconds. ``reference`` tokens (LTXVReferenceAudio's clip)
        come first, placed as a clip of their length that ends one latent frame before the audio starts."""
        start, end = self._audio_bounds(torch.arange(frames, dtype=torch.float32, device=device))
        if reference:
            r_start, r_end = self._audio_bounds(torch.arange(reference, dtype=torch.float32, device=device))
            c = self.config
            offset = r_end[-1] + c.audio_scale * c.hop_length / c.sample_rate
            start, end = torch.cat([r_start - offset, start]), torch.cat([r_end - offset, end])
        return ((start + end) / 2).view(1, 1, -1).expand(batch, -1, -1)

    def _audio_bounds(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(start, end) in seconds of audio latent frames ``f``: each covers ``audio_scale`` mel frames, the first
        only its last one (the causal audio VAE)."""
        s, c = self.config.audio_scale, self.config
        start = (f * s + c.causal_offset - s).clip(min=0) * c.hop_length / c.sample_rate
        end = ((f + 1) * s + c.causal_offset - s).clip(min=0) * c.hop_length / c.sample_rate
        return start, end

    @property
    def text_widths(self) -> tuple[int, int]:
        """The widths of the video and audio text states the blocks read side by side."""
        c = self.config
        return (c.caption_channels, c.caption_channels) if c.caption_projection else (c.dim, c.audio_dim)

    def connect(self, context: torch.Tensor) -> torch.Tensor:
        """LTX-2.3: the text encoder's projected features [B, L, dim + audio_dim] through the connectors kept here
        -> the text states [B, L', dim + audio_dim] (registers appended)."""
        video, audio = context.split(list(self.text_widths), dim=-1)
        return torch.cat([self.video_embeddings_connector(video), self.audio_embeddings_connector(audio)], dim=-1)

    def forward_tokens(self, x: torch.Tensor, a: torch.Tensor, context: torch.Tensor, audio_context: torch.Tensor,
                       timestep: torch.Tensor, audio_timestep: torch.Tensor, video_shape: tuple[int, int, int],
                       fps: float, context_mask: torch.Tensor | None = None,
                       audio_context_mask: torch.Tensor | None = None,
                       keyframe_idxs: torch.Tensor | None = None,
                       audio_reference: torch.Tensor | None = None, kept: torch.Tensor | None = None,
                       guide_entries: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Patchified video [B, N, C] and audio [B, M, C] tokens, text states of each stream [B, L, width] ->
        the velocity tokens of both streams; timesteps are [B] or per token [B, N] / [B, M], already x1000.

        ``audio_reference`` [B, R, C]: clean audio tokens (ID-LoRA's speaker reference) that run ahead of the
        audio at timestep 0 and earlier positions (:meth:`audio_coords`); no velocity is returned for them.
        ``kept`` [N]: the video tokens to run (the others get zero velocity); ``guide_entries``: how the guide
        tokens at the end weigh in self-attention (``guides.py``).
        """
        c, b, n = self.config, x.shape[0], x.shape[1]
        if kept is not None:
            x = x[:, kept]
            if timestep.shape[-1] == n:
                timestep = timestep[:, kept]
        guides, guide_tokens = guide_attention(guide_entries, keyframe_idxs, kept, x.shape[1], x.dtype, x.device)
        reference = 0 if audio_reference is None else audio_reference.shape[1]
        if reference:
            audio_timestep = audio_timestep.reshape(b, -1).expand(b, a.shape[1])
            audio_timestep = torch.cat([audio_timestep.new_zeros(b, reference), audio_timestep], dim=1)
            a = torch.cat([audio_reference.to(a), a], dim=1)
        spans = self.video_spans(*video_shape, b, x.device, keyframe_idxs, kept)
        vc = _middles(spans, fps)
        ac = self.audio_coords(a.shape[1] - reference, b, x.device, reference)
        heads, audio_heads = (c.heads, c.audio_heads) if c.rope_split else (0, 0)
        rope = {"video": rope_freqs(vc, (c.max_frames, c.max_size, c.max_size), c.dim, c.theta, heads),
                "audio": rope_freqs(ac, (c.max_frames,), c.audio_dim, c.theta, audio_heads),
                "video_cross": rope_freqs(vc[:, :1], (c.max_frames,), c.audio_dim, c.theta, audio_heads),
                "audio_cross": rope_freqs(ac, (c.max_frames,), c.audio_dim, c.theta, audio_heads)}
        x, a = self.patchify_proj(x), self.audio_patchify_proj(a)
        if c.keyframe_embedding:
            # tokens of a latent frame holding one pixel frame (starting at pixel frame 0), guides excepted
            marker = spans[:, 0, :, 0] == 0
            if guide_tokens:
                marker[:, -guide_tokens:] = False
            x = x + marker[..., None].to(x) * _ops.cast_weight(self, "keyframes_abs_pos_embedding", x)
        emb_v, embedded_v = self.adaln_single(timestep, b, x.dtype)
        emb_a, embedded_a = self.audio_adaln_single(audio_timestep, b, a.dtype)
        # sigmas per sample: the largest timestep of the stream (frames kept by a noise mask have less)
        v_sigma, a_sigma = timestep.reshape(b, -1).amax(dim=1), audio_timestep.reshape(b, -1).amax(dim=1)
        v_cross, a_cross = (a_sigma, v_sigma) if c.cross_timestep else (timestep, audio_timestep)
        emb = {"video": emb_v, "audio": emb_a,
               "video_cross": self.av_ca_video_scale_shift_adaln_single(v_cross, b, x.dtype)[0],
               "video_gate": self.av_ca_a2v_gate_adaln_single(v_cross, b, x.dtype)[0],
               "audio_cross": self.av_ca_audio_scale_shift_adaln_single(a_cross, b, a.dtype)[0],
               "audio_gate": self.av_ca_v2a_gate_adaln_single(a_cross, b, a.dtype)[0]}
        if c.prompt_adaln:
            emb["video_prompt"] = self.prompt_adaln_single(v_sigma, b, x.dtype)[0]
            emb["audio_prompt"] = self.audio_prompt_adaln_single(a_sigma, b, a.dtype)[0]
        if c.caption_projection:
            context = self.caption_projection(context)
            audio_context = self.audio_caption_projection(audio_context)
        masks = {"video": _key_mask(context_mask, x.dtype), "audio": _key_mask(audio_context_mask, a.dtype),
                 "guides": guides}
        for block in self.transformer_blocks:
            x, a = block(x, a, context, audio_context, emb, rope, masks)
        video = restore_left_out(self._out(x, embedded_v, "scale_shift_table", self.proj_out), kept, n)
        return video, \
            self._out(a[:, reference:], embedded_a[:, reference:], "audio_scale_shift_table", self.audio_proj_out)

    def forward(self, x: torch.Tensor, timestep: Any, context: torch.Tensor, attention_mask: torch.Tensor | None = None,
                frame_rate: float = 25.0, latent_shapes: list | None = None,
                keyframe_idxs: torch.Tensor | None = None, unprocessed_ltxav_embeds: bool = False,
                ref_audio: dict[str, torch.Tensor] | None = None, denoise_mask: torch.Tensor | None = None,
                guide_attention_entries: list | None = None, **kwargs: Any) -> torch.Tensor:
        """One sampler evaluation: the packed video + audio latent (``latent_shapes``; a bare video latent
        without them), sigmas per stream (``(video, audio)``, each [B] or per token), the text states of both
        streams side by side (:attr:`text_widths`; LTX-2.3's before its connectors when
        ``unprocessed_ltxav_embeds``), LTXVReferenceAudio's ``ref_audio`` tokens, the video's noise mask (tokens
        marked below 0 are left out) and LTXVAddGuide's ``guide_attention_entries`` -> the velocity, packed the
        same way."""
        from ...model.nested import pack_latents, unpack_latents

        c = self.config
        parts = unpack_latents(x, latent_shapes) if latent_shapes else [x]
        video = parts[0]
        audio = parts[1] if len(parts) > 1 else video.new_zeros(video.shape[0], 8, 0, c.audio_in_channels // 8)
        widths = self.text_widths
        if context.shape[-1] != sum(widths):
            raise ValueError(f"LTX-2 expects the text encoder's video and audio states side by side "
                             f"({sum(widths)} wide), got {context.shape[-1]}")
        if unprocessed_ltxav_embeds and c.connector_layers:
            context, attention_mask = self.connect(context), None
        v_t, a_t = timestep if isinstance(timestep, (tuple, list)) else (timestep, timestep)
        b, channels, frames, height, width = video.shape
        a_channels, a_frames, bins = audio.shape[1:]
        v_tokens = video.flatten(2).transpose(1, 2)
        a_tokens = audio.permute(0, 2, 1, 3).reshape(b, a_frames, a_channels * bins)
        mask = attention_mask.reshape(b, -1) if attention_mask is not None else None
        v_out, a_out = self.forward_tokens(
            v_tokens, a_tokens, context[..., : widths[0]], context[..., widths[0]:],
            (v_t * 1000.0).reshape(b, -1), (a_t * 1000.0).reshape(b, -1), (frames, height, width), float(frame_rate),
            context_mask=mask, audio_context_mask=mask, keyframe_idxs=keyframe_idxs,
            audio_reference=None if ref_audio is None else ref_audio["tokens"].to(a_tokens).expand(b, -1, -1),
            kept=kept_tokens(denoise_mask) if keyframe_idxs is not None else None,
            guide_entries=guide_attention_entries)
        video = v_out.transpose(1, 2).reshape(b, -1, frames, height, width)
        audio = a_out.reshape(b, a_frames, a_channels, bins).permute(0, 2, 1, 3)
        if len(parts) == 1:
            return video
        return pack_latents([video, audio])[0]

    def _out(self, h: torch.Tensor, embedded: torch.Tensor, table: str, proj: nn.Module) -> torch.Tensor:
        values = _ops.cast_weight(self, table, h)[None, None] + embedded[:, :, None]
        shift, scale = values[:, :, 0], values[:, :, 1]
        return proj(F.layer_norm(h, (h.shape[-1],), eps=1e-6) * (1 + scale) + shift)


def _middles(spans: torch.Tensor, fps: float) -> torch.Tensor:
    """Token spans [B, 3, N, 2] -> their middles [B, 3, N]: seconds (from the first pixel frame), pixel rows,
    pixel columns."""
    spans = spans.clone()
    spans[:, 0] = spans[:, 0] / fps
    return spans.mean(dim=-1)


def _key_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A [B, L] keep-mask of text tokens as an additive attention bias [B, 1, L]."""
    if mask is None:
        return None
    return ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)
