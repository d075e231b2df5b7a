"""The Wan 2.1 and 2.2 causal 3-d autoencoders (8x / 16x spatial, 4x temporal, 16 / 48 latent channels).

Qwen-Image uses it for still images (one frame); the Wan video models use the
same network. Every temporal convolution is causal: a frame only sees itself
and earlier frames, so a video is processed in chunks (encoder: the first
frame, then 4 frames at a time; decoder: one latent frame at a time) while a
:class:`Stream` carries each convolution's last input frames to the next
chunk. The result equals running each convolution over the whole sequence
with zeros before the first frame, but memory stays bounded by one chunk.
The first frame is special: it is not downsampled (encoder) or upsampled
(decoder) in time, so T frames give 1 + (T - 1) / 4 latent frames.

The Wan 2.2 VAE (:class:`WanVAE22`) works on 2x2 patches of pixels (12
channels), and its down / up levels add a parameter-free shortcut around
each level (channel-averaging the space-to-depth input, or duplicating
channels depth-to-space), with a wider decoder (256) than encoder (160).

Weight names follow the released Wan checkpoints as ComfyUI loads them
(``encoder.conv1``, ``encoder.downsamples.N.residual.0.gamma``,
``decoder.upsamples.N.resample.1``, ``conv1``/``conv2`` for the latent
projections).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..model import ops as _ops

#: per-convolution carried frames of one encode/decode call
Stream = dict


class CausalConv(nn.Module):
    """Mixed into a Conv3d of an ops namespace: padded in time only on the past side."""

    time_pad = 0
    space_pad = (0, 0, 0, 0)

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        pad = self.time_pad
        if pad and stream is not None:
            previous = stream.get(self)
            if previous is not None:
                x = torch.cat([previous.to(x), x], dim=2)
                pad = max(pad - previous.shape[2], 0)
            stream[self] = x[:, :, -self.time_pad:]
        if pad and x.shape[2] == 1 and pad == self.kernel_size[0] - 1 and self.stride[0] == 1:
            return self._single_frame(x)
        return super().forward(F.pad(x, (*self.space_pad, pad, 0)))

    def _single_frame(self, x: torch.Tensor) -> torch.Tensor:
        """One frame after zero padding: only the kernel's last time tap sees data (a 2-d convolution)."""
        x = _ops.compute_input(self, x)
        weight = _ops.cast_weight(self, "weight", x)[:, :, -1]
        bias = _ops.cast_weight(self, "bias", x)
        out = F.conv2d(F.pad(x[:, :, 0], self.space_pad), weight, bias, stride=self.stride[1:],
                       dilation=self.dilation[1:], groups=self.groups)
        return out.unsqueeze(2)


_CAUSAL: dict[type, type] = {}


def CausalConv3d(ops: Any, in_ch: int, out_ch: int, kernel: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1, padding: int | tuple[int, int, int] = 0) -> nn.Module:
    """A causal Conv3d built from ``ops.Conv3d`` (so fp8 / cast weights work); its weights keep the file's names."""
    cls = _CAUSAL.get(ops.Conv3d)
    if cls is None:
        cls = _CAUSAL[ops.Conv3d] = type(f"Causal{ops.Conv3d.__name__}", (CausalConv, ops.Conv3d), {})
    conv = cls(in_ch, out_ch, kernel, stride=stride, padding=0)
    pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
    conv.time_pad, conv.space_pad = 2 * pt, (pw, pw, ph, ph)
    return conv


class RMSNorm(nn.Module):
    """Wan's channel RMS norm: x / ||x|| * sqrt(C) * gamma (over the channel axis)."""

    def __init__(self, dim: int, images: bool = True) -> None:
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.empty((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma.to(x)


class ResidualBlock(nn.Module):
    def __init__(self, ops: Any, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(ops, in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, images=False), nn.SiLU(), nn.Dropout(0.0),
            CausalConv3d(ops, out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(ops, in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        h = x
        for layer in self.residual:
            h = layer(h, stream) if isinstance(layer, CausalConv) else layer(h)
        return h + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame."""

    def __init__(self, ops: Any, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)
        self.to_qkv = ops.Conv2d(dim, dim * 3, 1)
        self.proj = ops.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        q, k, v = self.to_qkv(self.norm(frames)).reshape(b * t, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        out = self.proj(out.transpose(-1, -2).reshape(b * t, c, h, w))
        return x + out.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


class Resample(nn.Module):
    """2x spatial down/upsampling, with a causal 2x temporal step in the "3d" modes."""

    def __init__(self, ops: Any, dim: int, mode: str, halve: bool = True) -> None:
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          ops.Conv2d(dim, dim // 2 if halve else dim, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(ops, dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), ops.Conv2d(dim, dim, 3, stride=(2, 2)))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(ops, dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.resample(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        return y.reshape(b, t, *y.shape[1:]).permute(0, 2, 1, 3, 4)

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        if self.mode == "upsample3d" and stream is not None:
            if self not in stream:  # the first latent frame is not doubled in time
                stream[self] = None
                stream[self.time_conv] = torch.zeros_like(x[:, :, :1])
            else:
                b, c, t, h, w = x.shape
                doubled = self.time_conv(x, stream).reshape(b, 2, c, t, h, w)
                x = torch.stack((doubled[:, 0], doubled[:, 1]), dim=3).reshape(b, c, t * 2, h, w)
        x = self._spatial(x)
        if self.mode == "downsample3d" and stream is not None:
            previous = stream.get(self)
            stream[self] = x[:, :, -1:]
            if previous is not None:  # the first frame is kept; later ones are halved in time
                x = self.time_conv(torch.cat([previous, x], dim=2))
        return x


def _run(layers: nn.Module, x: torch.Tensor, stream: Stream | None) -> torch.Tensor:
    for layer in layers:
        x = layer(x, stream) if isinstance(layer, (ResidualBlock, AttentionBlock, Resample, CausalConv)) \
            else layer(x)
    return x


class Encoder3d(nn.Module):
    def __init__(self, ops: Any, dim: int, z_dim: int, dim_mult: tuple[int, ...], num_res_blocks: int,
                 temporal_downsample: tuple[bool, ...]) -> None:
        super().__init__()
        dims = [dim * u for u in (1, *dim_mult)]
        self.conv1 = CausalConv3d(ops, 3, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            for _ in range(num_res_blocks):
                layers.append(ResidualBlock(ops, in_dim, out_dim))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                layers.append(Resample(ops, out_dim, "downsample3d" if temporal_downsample[i] else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        top = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(ops, top, top), AttentionBlock(ops, top),
                                    ResidualBlock(ops, top, top))
        self.head = nn.Sequential(RMSNorm(top, images=False), nn.SiLU(), CausalConv3d(ops, top, z_dim, 3, padding=1))

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        x = self.conv1(x, stream)
        for part in (self.downsamples, self.middle, self.head):
            x = _run(part, x, stream)
        return x


class Decoder3d(nn.Module):
    def __init__(self, ops: Any, dim: int, z_dim: int, dim_mult: tuple[int, ...], num_res_blocks: int,
                 temporal_upsample: tuple[bool, ...]) -> None:
        super().__init__()
        dims = [dim * u for u in (dim_mult[-1], *dim_mult[::-1])]
        self.conv1 = CausalConv3d(ops, z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(ops, dims[0], dims[0]), AttentionBlock(ops, dims[0]),
                                    ResidualBlock(ops, dims[0], dims[0]))
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            if i > 0:
                in_dim //= 2  # the upsampler before this level halved the channels
            for _ in range(num_res_blocks + 1):
                layers.append(ResidualBlock(ops, in_dim, out_dim))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                layers.append(Resample(ops, out_dim, "upsample3d" if temporal_upsample[i] else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(RMSNorm(dims[-1], images=False), nn.SiLU(),
                                  CausalConv3d(ops, dims[-1], 3, 3, padding=1))

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        x = self.conv1(x, stream)
        for part in (self.middle, self.upsamples, self.head):
            x = _run(part, x, stream)
        return x


class WanVAE(nn.Module):
    """``encode_raw`` / ``decode_raw`` as model/vae.py's :class:`~..model.vae.VAE` expects.

    Images [B, 3, H, W] are encoded as the frames of one clip ([1, 3, B, H, W]),
    as ComfyUI does for video VAEs; clips [B, 3, T, H, W] as they are. Latents
    are [B, 16, T', H/8, W/8] in the network's raw units (the latent format
    normalises them per channel).
    """

    def __init__(self, ops: Any = _ops.plain, dim: int = 96, z_dim: int = 16, dim_mult: tuple[int, ...] = (1, 2, 4, 4),
                 num_res_blocks: int = 2, temporal_downsample: tuple[bool, ...] = (False, True, True)) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = Encoder3d(ops, dim, z_dim * 2, dim_mult, num_res_blocks, temporal_downsample)
        self.conv1 = CausalConv3d(ops, z_dim * 2, z_dim * 2, 1)
        self.conv2 = CausalConv3d(ops, z_dim, z_dim, 1)
        self.decoder = Decoder3d(ops, dim, z_dim, dim_mult, num_res_blocks, tuple(temporal_downsample[::-1]))

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self.conv2, "compute_dtype", None) or self.conv2.weight.dtype

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Clip [B, 3, T, H, W] in [-1, 1] -> latent mean [B, z, 1 + (T-1)//4, H/8, W/8]."""
        stream: Stream = {}
        chunks = [x[:, :, :1]] + [x[:, :, 1 + 4 * i: 5 + 4 * i] for i in range((x.shape[2] - 1) // 4)]
        out = torch.cat([self.encoder(chunk, stream) for chunk in chunks], dim=2)
        return self.conv1(out)[:, : self.z_dim]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent [B, z, T, h, w] -> clip [B, 3, 1 + 4 (T-1), 8h, 8w] (unclamped)."""
        stream: Stream = {}
        x = self.conv2(z)
        return torch.cat([self.decoder(x[:, :, i: i + 1], stream) for i in range(x.shape[2])], dim=2)

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.movedim(0, 1).unsqueeze(0)
        return self.encode(x.to(self.dtype))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 4:
            z = z.unsqueeze(2)
        return self.decode(z.to(self.dtype))


def patchify(x: torch.Tensor, p: int = 2) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, C*p*p, T, H/p, W/p], channel order (c, column offset, row offset)."""
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // p, p, w // p, p)
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int = 2) -> torch.Tensor:
    b, cpp, t, h, w = x.shape
    c = cpp // (p * p)
    x = x.view(b, c, p, p, t, h, w)  # c, column offset r, row offset q
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, c, t, h * p, w * p)


class AvgDown(nn.Module):
    """Parameter-free shortcut: space/time to channels, then the mean of each group of channels."""

    def __init__(self, in_ch: int, out_ch: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.out_ch, self.ft, self.fs = out_ch, factor_t, factor_s
        self.group = in_ch * factor_t * factor_s * factor_s // out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, 0, (-x.shape[2]) % self.ft, 0))
        b, c, t, h, w = x.shape
        ft, fs = self.ft, self.fs
        x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(b, self.out_ch, self.group, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp(nn.Module):
    """Parameter-free shortcut: channels repeated, then moved to space/time (the first chunk's lead frame cut)."""

    def __init__(self, in_ch: int, out_ch: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.out_ch, self.ft, self.fs = out_ch, factor_t, factor_s
        self.repeats = out_ch * factor_t * factor_s * factor_s // in_ch

    def forward(self, x: torch.Tensor, first: bool = False) -> torch.Tensor:
        x = x.repeat_interleave(self.repeats, dim=1)
        b, _, t, h, w = x.shape
        ft, fs = self.ft, self.fs
        x = x.view(b, self.out_ch, ft, fs, fs, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        x = x.reshape(b, self.out_ch, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1:] if first else x


class DownBlock(nn.Module):
    def __init__(self, ops: Any, in_dim: int, out_dim: int, blocks: int, temporal: bool, down: bool) -> None:
        super().__init__()
        self.avg_shortcut = AvgDown(in_dim, out_dim, 2 if temporal else 1, 2 if down else 1)
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers.append(ResidualBlock(ops, in_dim, out_dim))
            in_dim = out_dim
        if down:
            layers.append(Resample(ops, out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        return _run(self.downsamples, x, stream) + self.avg_shortcut(x)


class UpBlock(nn.Module):
    def __init__(self, ops: Any, in_dim: int, out_dim: int, blocks: int, temporal: bool, up: bool) -> None:
        super().__init__()
        self.avg_shortcut = DupUp(in_dim, out_dim, 2 if temporal else 1, 2) if up else None
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers.append(ResidualBlock(ops, in_dim, out_dim))
            in_dim = out_dim
        if up:
            layers.append(Resample(ops, out_dim, "upsample3d" if temporal else "upsample2d", halve=False))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, stream: Stream | None = None, first: bool = False) -> torch.Tensor:
        out = _run(self.upsamples, x, stream)
        return out if self.avg_shortcut is None else out + self.avg_shortcut(x, first)


class Encoder22(Encoder3d):
    def __init__(self, ops: Any, dim: int, z_dim: int, dim_mult: tuple[int, ...], num_res_blocks: int,
                 temporal_downsample: tuple[bool, ...]) -> None:
        nn.Module.__init__(self)
        dims = [dim * u for u in (1, *dim_mult)]
        self.conv1 = CausalConv3d(ops, 12, dims[0], 3, padding=1)
        self.downsamples = nn.Sequential(*[
            DownBlock(ops, i_dim, o_dim, num_res_blocks, temporal_downsample[i] if i < len(temporal_downsample)
                      else False, i != len(dim_mult) - 1)
            for i, (i_dim, o_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True))])
        top = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(ops, top, top), AttentionBlock(ops, top),
                                    ResidualBlock(ops, top, top))
        self.head = nn.Sequential(RMSNorm(top, images=False), nn.SiLU(), CausalConv3d(ops, top, z_dim, 3, padding=1))

    def forward(self, x: torch.Tensor, stream: Stream | None = None) -> torch.Tensor:
        x = self.conv1(x, stream)
        for block in self.downsamples:
            x = block(x, stream)
        return _run(self.head, _run(self.middle, x, stream), stream)


class Decoder22(nn.Module):
    def __init__(self, ops: Any, dim: int, z_dim: int, dim_mult: tuple[int, ...], num_res_blocks: int,
                 temporal_upsample: tuple[bool, ...]) -> None:
        super().__init__()
        dims = [dim * u for u in (dim_mult[-1], *dim_mult[::-1])]
        self.conv1 = CausalConv3d(ops, z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(ops, dims[0], dims[0]), AttentionBlock(ops, dims[0]),
                                    ResidualBlock(ops, dims[0], dims[0]))
        self.upsamples = nn.Sequential(*[
            UpBlock(ops, i_dim, o_dim, num_res_blocks + 1, temporal_upsample[i] if i < len(temporal_upsample)
                    else False, i != len(dim_mult) - 1)
            for i, (i_dim, o_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True))])
        self.head = nn.Sequential(RMSNorm(dims[-1], images=False), nn.SiLU(),
                                  CausalConv3d(ops, dims[-1], 12, 3, padding=1))

    def forward(self, x: torch.Tensor, stream: Stream | None = None, first: bool = False) -> torch.Tensor:
        x = _run(self.middle, self.conv1(x, stream), stream)
        for block in self.upsamples:
            x = block(x, stream, first)
        return _run(self.head, x, stream)


class WanVAE22(WanVAE):
    """The Wan 2.2 VAE: 16x spatial, 4x temporal, 48 channels; latents [B, 48, T', H/16, W/16]."""

    def __init__(self, ops: Any = _ops.plain, dim: int = 160, dec_dim: int = 256, z_dim: int = 48,
                 dim_mult: tuple[int, ...] = (1, 2, 4, 4), num_res_blocks: int = 2,
                 temporal_downsample: tuple[bool, ...] = (False, True, True)) -> None:
        nn.Module.__init__(self)
        self.z_dim = z_dim
        self.encoder = Encoder22(ops, dim, z_dim * 2, dim_mult, num_res_blocks, temporal_downsample)
        self.conv1 = CausalConv3d(ops, z_dim * 2, z_dim * 2, 1)
        self.conv2 = CausalConv3d(ops, z_dim, z_dim, 1)
        self.decoder = Decoder22(ops, dec_dim, z_dim, dim_mult, num_res_blocks, tuple(temporal_downsample[::-1]))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return super().encode(patchify(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        stream: Stream = {}
        x = self.conv2(z)
        out = torch.cat([self.decoder(x[:, :, i: i + 1], stream, first=i == 0) for i in range(x.shape[2])], dim=2)
        return unpatchify(out)
