"""The HunyuanVideo 1.5 VAE: causal 3-d convolutions, 32 latent channels, 16x spatial and 4x temporal compression.

A clip of 1 + 4k frames becomes 1 + k latent frames of H/16 x W/16. Every
convolution is causal in time (the first frame replicated twice in front)
and replicate-padded in space; norms are RMS norms over channels with a
learned gain. Down- and upsampling move 2x2 (or 2x2x2) neighbourhoods
between space-time and channels, with a parameter-free shortcut (channel
means down, channel repeats up); the first frame is compressed spatially
only. The middle attention lets each frame attend to itself and earlier
frames (the reference implementation's causal mask), computed a frame of
queries at a time so no mask over all positions is ever built.

Clips run in chunks (the first frame, then 8 frames; latents: two frames at
a time) with each convolution carrying its last two input frames over, which
equals running the whole clip at once but keeps activations to one chunk.

Module names are ComfyUI's (``encoder.down.N.block.M.conv1.conv``,
``decoder.up.N.upsample.conv.conv``, ``mid.attn_1.q`` ...); files that keep
the 1x1 shortcut as ``nin_shortcut.weight`` are renamed by :func:`module_key`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.detection import Shapes
from ...model.quant import network_weights
from ...model.vae import VAE, VAEModel

#: per-convolution carried frames of the previous chunk, keyed by the module's id
Carry = dict[int, torch.Tensor]

CHANNELS = (128, 256, 512, 1024, 1024)


def module_key(key: str) -> str:
    if ".nin_shortcut." in key and ".nin_shortcut.conv." not in key:
        return key.replace(".nin_shortcut.", ".nin_shortcut.conv.")
    return key


class CausalConv3d(nn.Module):
    """A 3x3x3 (or 1x1x1) convolution padded causally in time, by replication."""

    def __init__(self, ops: Any, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = ops.Conv3d(cin, cout, kernel)
        self.kernel = kernel

    def forward(self, x: torch.Tensor, carry: Carry | None = None) -> torch.Tensor:
        if self.kernel == 1:
            return self.conv(x)
        front = self.kernel - 1
        if carry is not None:
            previous = carry.get(id(self))
            if previous is not None:
                x = torch.cat([previous, x], dim=2)
                front -= previous.shape[2]
            carry[id(self)] = x[:, :, -(self.kernel - 1):]
        pad = self.kernel // 2
        return self.conv(F.pad(x, (pad, pad, pad, pad, front, 0), mode="replicate"))


class RMSNorm(nn.Module):
    """Channel RMS norm: ``normalize(x) * sqrt(C) * gamma`` (computed in float32 for half inputs)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.empty(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.normalize(x.float(), dim=1).to(x.dtype)
        return normed * self.scale * _ops.cast_weight(self, "gamma", normed)


class ResBlock(nn.Module):
    def __init__(self, ops: Any, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cin)
        self.conv1 = CausalConv3d(ops, cin, cout)
        self.norm2 = RMSNorm(cout)
        self.conv2 = CausalConv3d(ops, cout, cout)
        if cin != cout:
            self.nin_shortcut = CausalConv3d(ops, cin, cout, kernel=1)

    def forward(self, x: torch.Tensor, carry: Carry | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), carry)
        h = self.conv2(F.silu(self.norm2(h)), carry)
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class Attention(nn.Module):
    """Single-head attention over all positions, each frame seeing itself and the frames before it."""

    def __init__(self, ops: Any, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)
        self.q = ops.Conv3d(dim, dim, 1)
        self.k = ops.Conv3d(dim, dim, 1)
        self.v = ops.Conv3d(dim, dim, 1)
        self.proj_out = ops.Conv3d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        normed = self.norm(x)
        q, k, v = (p(normed).reshape(b, 1, c, t * h * w).transpose(2, 3) for p in (self.q, self.k, self.v))
        n = h * w
        # frame by frame: each frame's queries against the keys up to its end, so no [L, L] mask is built
        out = torch.cat([F.scaled_dot_product_attention(q[:, :, i * n: (i + 1) * n], k[:, :, : (i + 1) * n],
                                                        v[:, :, : (i + 1) * n]) for i in range(t)], dim=2)
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, t, h, w))


class Mid(nn.Module):
    def __init__(self, ops: Any, dim: int) -> None:
        super().__init__()
        self.block_1 = ResBlock(ops, dim, dim)
        self.attn_1 = Attention(ops, dim)
        self.block_2 = ResBlock(ops, dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def to_depth(x: torch.Tensor, rt: int) -> torch.Tensor:
    """[B, C, rt*T, 2H, 2W] -> [B, rt*2*2*C, T, H, W] (neighbourhood offsets outermost)."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // rt, rt, h // 2, 2, w // 2, 2).permute(0, 3, 5, 7, 1, 2, 4, 6)
    return x.reshape(b, rt * 4 * c, t // rt, h // 2, w // 2)


def from_depth(x: torch.Tensor, rt: int) -> torch.Tensor:
    """[B, rt*2*2*C, T, H, W] -> [B, C, rt*T, 2H, 2W], the inverse of :func:`to_depth`."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, rt, 2, 2, c // (rt * 4), t, h, w).permute(0, 4, 5, 1, 6, 2, 7, 3)
    return x.reshape(b, c // (rt * 4), t * rt, h * 2, w * 2)


class Downsample(nn.Module):
    def __init__(self, ops: Any, cin: int, cout: int, temporal: bool) -> None:
        super().__init__()
        factor = 8 if temporal else 4
        self.conv = CausalConv3d(ops, cin, cout // factor)
        self.temporal = temporal
        self.group = factor * cin // cout

    @staticmethod
    def _pack(h: torch.Tensor, x: torch.Tensor, rt: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
        h, x = to_depth(h, rt), to_depth(x, rt)
        b, _, t, hh, ww = x.shape
        return h, x.view(b, h.shape[1], group, t, hh, ww).mean(dim=2)

    def forward(self, x: torch.Tensor, carry: Carry | None = None, first: bool = True) -> torch.Tensor:
        h = self.conv(x, carry)
        if not self.temporal:
            h, x = Downsample._pack(h, x, 1, self.group)
            return h + x
        parts = []
        if first:  # the first frame: spatial packing only, channels doubled to match
            hf, xf = to_depth(h[:, :, :1], 1), to_depth(x[:, :, :1], 1)
            b, _, t, hh, ww = xf.shape
            xf = xf.view(b, 2 * hf.shape[1], self.group // 2, t, hh, ww).mean(dim=2)
            parts.append(torch.cat([hf, hf], dim=1) + xf)
            h, x = h[:, :, 1:], x[:, :, 1:]
        if h.shape[2]:
            h, x = Downsample._pack(h, x, 2, self.group)
            parts.append(h + x)
        return torch.cat(parts, dim=2)


class Upsample(nn.Module):
    def __init__(self, ops: Any, cin: int, cout: int, temporal: bool) -> None:
        super().__init__()
        factor = 8 if temporal else 4
        self.conv = CausalConv3d(ops, cin, cout * factor)
        self.temporal = temporal
        self.repeats = factor * cout // cin

    def forward(self, x: torch.Tensor, carry: Carry | None = None, first: bool = True) -> torch.Tensor:
        h = self.conv(x, carry)
        if not self.temporal:
            return from_depth(h, 1) + from_depth(x.repeat_interleave(self.repeats, dim=1), 1)
        parts = []
        if first:  # the first latent frame becomes one frame: half the channels of a spatial unpacking
            hf = from_depth(h[:, :, :1], 1)
            parts.append(hf[:, : hf.shape[1] // 2]
                         + from_depth(x[:, :, :1].repeat_interleave(self.repeats // 2, dim=1), 1))
            h, x = h[:, :, 1:], x[:, :, 1:]
        if h.shape[2]:
            parts.append(from_depth(h, 2) + from_depth(x.repeat_interleave(self.repeats, dim=1), 2))
        return torch.cat(parts, dim=2)


class Stage(nn.Module):
    """One resolution: residual blocks, then an optional down- or upsampler."""

    def __init__(self, ops: Any, cin: int, cout: int, blocks: int) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResBlock(ops, cin if j == 0 else cout, cout) for j in range(blocks))

    def forward(self, x: torch.Tensor, carry: Carry | None, first: bool) -> torch.Tensor:
        for blk in self.block:
            x = blk(x, carry)
        sampler = getattr(self, "downsample", None) or getattr(self, "upsample", None)
        return sampler(x, carry, first) if sampler is not None else x


class Encoder(nn.Module):
    def __init__(self, ops: Any, channels: tuple[int, ...], z: int, blocks: int = 2) -> None:
        super().__init__()
        self.z = z
        self.conv_in = CausalConv3d(ops, 3, channels[0])
        self.down = nn.ModuleList()
        ch = channels[0]
        for i, target in enumerate(channels):
            stage = Stage(ops, ch, target, blocks)
            ch = target
            if i < 4:  # 16x spatial: four downsamplers, the last two also temporal
                nxt = channels[i + 1]
                stage.downsample = Downsample(ops, ch, nxt, temporal=i >= 2)
                ch = nxt
            self.down.append(stage)
        self.mid = Mid(ops, ch)
        self.norm_out = RMSNorm(ch)
        self.conv_out = CausalConv3d(ops, ch, 2 * z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip [B, 3, 1 + 4k, H, W] -> posterior mean [B, z, 1 + k, H/16, W/16]."""
        frames = 1 + 4 * ((x.shape[2] - 1) // 4)
        chunks = [x[:, :, :1]] + [c for c in torch.split(x[:, :, 1:frames], 8, dim=2) if c.shape[2]]
        carry: Carry = {}
        out = []
        for i, chunk in enumerate(chunks):
            h = self.conv_in(chunk, carry)
            for stage in self.down:
                h = stage(h, carry, i == 0)
            out.append(h)
        h = self.mid(torch.cat(out, dim=2))
        b, c, t, hh, ww = h.shape
        skip = h.view(b, 2 * self.z, c // (2 * self.z), t, hh, ww).mean(dim=2)
        moments = self.conv_out(F.silu(self.norm_out(h))) + skip
        return moments[:, : self.z]


class Decoder(nn.Module):
    def __init__(self, ops: Any, channels: tuple[int, ...], z: int, blocks: int = 2) -> None:
        super().__init__()
        channels = tuple(reversed(channels))
        self.z = z
        self.repeat = channels[0] // z
        self.conv_in = CausalConv3d(ops, z, channels[0])
        self.mid = Mid(ops, channels[0])
        self.up = nn.ModuleList()
        ch = channels[0]
        for i, target in enumerate(channels):
            stage = Stage(ops, ch, target, blocks + 1)
            ch = target
            if i < 4:  # four upsamplers, the first two also temporal
                nxt = channels[i + 1]
                stage.upsample = Upsample(ops, ch, nxt, temporal=i < 2)
                ch = nxt
            self.up.append(stage)
        self.norm_out = RMSNorm(ch)
        self.conv_out = CausalConv3d(ops, ch, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent [B, z, 1 + k, h, w] -> clip [B, 3, 1 + 4k, 16h, 16w] (unclamped)."""
        x = self.conv_in(z) + z.repeat_interleave(self.repeat, dim=1)
        x = self.mid(x)
        carry: Carry = {}
        out = []
        for i, chunk in enumerate(torch.split(x, 2, dim=2)):
            for stage in self.up:
                chunk = stage(chunk, carry, i == 0)
            out.append(self.conv_out(F.silu(self.norm_out(chunk)), carry))
        return torch.cat(out, dim=2)


class HunyuanVideo15VAENet(nn.Module):
    def __init__(self, ops: Any = _ops.plain, channels: tuple[int, ...] = CHANNELS, z: int = 32,
                 blocks: int = 2) -> None:
        super().__init__()
        self.encoder = Encoder(ops, channels, z, blocks)
        self.decoder = Decoder(ops, channels, z, blocks)

    @property
    def dtype(self) -> torch.dtype:
        conv = self.decoder.conv_in.conv
        return getattr(conv, "compute_dtype", None) or conv.weight.dtype

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # frames of one clip
            x = x.movedim(0, 1).unsqueeze(0)
        return self.encoder(x.to(self.dtype))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 4:
            z = z.unsqueeze(2)
        return self.decoder(z.to(self.dtype))


class HunyuanVideo15VAE(VAE):
    """Latents are 5-d [B, 32, T, H/16, W/16]; T latent frames decode to 1 + 4 (T - 1)."""

    def temporal_compression_decode(self) -> int:
        return 4


def layout(shapes: Shapes, prefix: str) -> tuple[tuple[int, ...], int, int]:
    """(channels per resolution, latent channels, residual blocks per encoder stage) from the keys."""
    channels = tuple(int(shapes[f"{prefix}encoder.down.{i}.block.0.conv1.conv.weight"][0]) for i in range(5))
    z = int(shapes[prefix + "decoder.conv_in.conv.weight"][1])
    blocks = 0
    while f"{prefix}encoder.down.0.block.{blocks}.conv1.conv.weight" in shapes:
        blocks += 1
    return channels, z, blocks


def hunyuan_video15_vae(path: str, prefix: str, shapes: Shapes) -> VAE:
    channels, z, blocks = layout(shapes, prefix)
    weights = network_weights(path, prefix, shapes, "HunyuanVideo 1.5 VAE", "vae",
                              lambda ops, compute: HunyuanVideo15VAENet(ops, channels, z, blocks), rename=module_key)
    return HunyuanVideo15VAE(first_stage_model=VAEModel(weights), latent_channels=z, downscale_ratio=16,
                             latent_dim=3)
