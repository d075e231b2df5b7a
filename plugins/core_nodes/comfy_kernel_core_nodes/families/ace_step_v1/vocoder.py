"""ACE-Step 1.0's vocoder (ADaMoS HiFi-GAN v1) and the log-mel transform it was trained on.

The music DC-AE works on log-mel spectrograms, so waveforms go in through a
fixed transform and come out through a learned vocoder. The transform: 44.1 kHz
audio, 2048-sample Hann windows every 512 samples (reflect-padded so frame n
covers samples around 512 n, no centring), magnitudes, 128 Slaney mel bands
from 40 Hz to 16 kHz, natural log floored at 1e-5. The vocoder: a ConvNeXt
stack (depthwise convolution, LayerNorm, GELU MLP, layer scale) widens the 128
bands into features, then a HiFi-GAN generator upsamples them 512x to a waveform
(weight-normalised transposed convolutions, each followed by the mean of
residual stacks of dilated convolutions, tanh at the end). Stereo is vocoded as
two mono signals.

Keys are the checkpoint's (``backbone.channel_layers.N``, ``backbone.stages.N.M``,
``head.ups.N``, ``head.resblocks.M.convs1.K`` with ``weight_g`` / ``weight_v``);
widths, depths and kernels come from the shapes (:func:`vocoder_layout`). The
Hann window and mel filters are computed here, in float32 (the file's copies,
``mel_transform.spectrogram.window`` and ``mel_transform.mel_scale.fb``, are
the same functions of these settings; vae.py leaves them out).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...components.oobleck_vae import WNConv
from ...model.detection import Shapes, count

SAMPLE_RATE = 44100
N_FFT = 2048
HOP_LENGTH = 512
F_MIN = 40.0
F_MAX = 16000.0
#: the residual stacks' dilations: the shapes cannot tell them, these are the released model's
DILATIONS = (1, 3, 5)


@dataclass(frozen=True)
class VocoderLayout:
    mel_bins: int = 128
    dims: tuple[int, ...] = (128, 256, 384, 512)
    depths: tuple[int, ...] = (3, 3, 9, 3)
    #: the ConvNeXt blocks' depthwise kernels; several make each block a sum of parallel ones
    kernels: tuple[int, ...] = (7,)
    mlp_ratio: int = 4
    layer_scale: bool = True
    width: int = 1024
    rates: tuple[int, ...] = (4, 4, 2, 2, 2, 2, 2)
    up_kernels: tuple[int, ...] = (8, 8, 4, 4, 4, 4, 4)
    res_kernels: tuple[int, ...] = (3, 7, 11, 13)
    pre_kernel: int = 13
    post_kernel: int = 13


def vocoder_layout(shapes: Shapes, prefix: str = "") -> VocoderLayout:
    """The vocoder stored under ``prefix`` (``vae.vocoder.``, say).

    Upsampling rates are half the transposed kernels, as in the released model
    (kernels 8 and 4 for rates 4 and 2); together they must make the 512-sample hop.
    """
    p = re.escape(prefix)
    levels = count(shapes, p + r"backbone\.stages\.(\d+)\.")
    dims = (int(shapes[prefix + "backbone.channel_layers.0.0.weight"][0]),
            *(int(shapes[f"{prefix}backbone.channel_layers.{i}.1.weight"][0]) for i in range(1, levels)))
    depths = tuple(count(shapes, p + rf"backbone\.stages\.{i}\.(\d+)\.") for i in range(levels))
    block = prefix + "backbone.stages.0.0."
    parallel = count(shapes, re.escape(block) + r"blocks\.(\d+)\.")
    blocks = [f"{block}blocks.{j}." for j in range(parallel)] if parallel else [block]
    kernels = tuple(int(shapes[b + "dwconv.weight"][-1]) for b in blocks)
    ups = count(shapes, p + r"head\.ups\.(\d+)\.")
    up_kernels = tuple(int(shapes[f"{prefix}head.ups.{i}.weight_v"][-1]) for i in range(ups))
    rates = tuple(k // 2 for k in up_kernels)
    if math.prod(rates) != HOP_LENGTH:
        raise ValueError(f"vocoder upsampling rates {rates} do not make the {HOP_LENGTH}-sample hop")
    kinds = count(shapes, p + r"head\.resblocks\.(\d+)\.") // ups
    pre = shapes[prefix + "head.conv_pre.weight_v"]
    return VocoderLayout(
        mel_bins=int(shapes[prefix + "backbone.channel_layers.0.0.weight"][1]), dims=dims, depths=depths,
        kernels=kernels, mlp_ratio=int(shapes[blocks[0] + "pwconv1.weight"][0]) // dims[0],
        layer_scale=blocks[0] + "gamma" in shapes, width=int(pre[0]), rates=rates, up_kernels=up_kernels,
        res_kernels=tuple(int(shapes[f"{prefix}head.resblocks.{j}.convs1.0.weight_v"][-1]) for j in range(kinds)),
        pre_kernel=int(pre[-1]), post_kernel=int(shapes[prefix + "head.conv_post.weight_v"][-1]))


# -- the log-mel transform ---------------------------------------------------------------------------------


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """Slaney's mel scale: 3 mels per 200 Hz up to 1 kHz, then 27 mels per factor 6.4."""
    step = math.log(6.4) / 27.0
    return torch.where(f < 1000.0, f * 3.0 / 200.0, 15.0 + torch.log(f.clamp(min=1e-10) / 1000.0) / step)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    step = math.log(6.4) / 27.0
    return torch.where(m < 15.0, m * 200.0 / 3.0, 1000.0 * torch.exp(step * (m - 15.0)))


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 128, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE, f_min: float = F_MIN,
                f_max: float = F_MAX) -> torch.Tensor:
    """Triangular mel filters [n_fft / 2 + 1, n_mels], Slaney scale and area normalisation (float32, CPU)."""
    freqs = torch.linspace(0.0, sample_rate // 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = torch.tensor([f_min, f_max], dtype=torch.float64)
    lo, hi = _hz_to_mel(edges).tolist()
    points = _mel_to_hz(torch.linspace(lo, hi, n_mels + 2, dtype=torch.float64))
    offsets = points[None, :] - freqs[:, None]
    widths = points[1:] - points[:-1]
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    filters = torch.minimum(rising, falling).clamp(min=0.0)
    return (filters * (2.0 / (points[2:] - points[:-2]))[None]).float()


@lru_cache(maxsize=4)
def hann_window(length: int = N_FFT) -> torch.Tensor:
    return torch.hann_window(length, dtype=torch.float32)


class LogMel(nn.Module):
    """Waveforms [N, samples] -> log-mel [N, n_mels, samples / hop], computed in float32."""

    def __init__(self, n_mels: int = 128) -> None:
        super().__init__()
        self.n_mels = n_mels

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        window, filters = hann_window().to(audio.device), mel_filters(self.n_mels).to(audio.device)
        pad = N_FFT - HOP_LENGTH
        audio = F.pad(audio.float()[:, None], (pad // 2, (pad + 1) // 2), mode="reflect")[:, 0]
        spec = torch.view_as_real(torch.stft(audio, N_FFT, HOP_LENGTH, window=window, center=False,
                                             return_complex=True))
        magnitude = torch.sqrt(spec.pow(2).sum(-1) + 1e-6)
        mel = (magnitude.transpose(-1, -2) @ filters).transpose(-1, -2)
        return torch.log(mel.clamp(min=1e-5))


# -- the vocoder --------------------------------------------------------------------------------------------


class LayerNorm(nn.Module):
    """LayerNorm over the last axis, or over the channels (axis 1) of [B, C, T] when ``channels_first``."""

    def __init__(self, dim: int, channels_first: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim))
        self.channels_first, self.eps = channels_first, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight.to(x), self.bias.to(x)
        if not self.channels_first:
            return F.layer_norm(x, (x.shape[-1],), weight, bias, self.eps)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return weight[:, None] * ((x - mean) / torch.sqrt(var + self.eps)) + bias[:, None]


class ConvNeXtBlock(nn.Module):
    def __init__(self, ops: Any, dim: int, kernel: int, ratio: int, layer_scale: bool) -> None:
        super().__init__()
        self.dwconv = ops.Conv1d(dim, dim, kernel, padding=(kernel - 1) // 2, groups=dim)
        self.norm = LayerNorm(dim)
        self.pwconv1 = ops.Linear(dim, ratio * dim)
        self.pwconv2 = ops.Linear(ratio * dim, dim)
        self.gamma = nn.Parameter(torch.empty(dim)) if layer_scale else None

    def forward(self, x: torch.Tensor, residual: bool = True) -> torch.Tensor:
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(self.dwconv(x).transpose(1, 2)))))
        if self.gamma is not None:
            h = self.gamma.to(h) * h
        h = h.transpose(1, 2)
        return x + h if residual else h


class ParallelConvNeXtBlock(nn.Module):
    def __init__(self, ops: Any, dim: int, kernels: tuple[int, ...], ratio: int, layer_scale: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ConvNeXtBlock(ops, dim, k, ratio, layer_scale) for k in kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + sum(block(x, residual=False) for block in self.blocks)


class Backbone(nn.Module):
    """128 mel bands -> ``dims[-1]`` features per frame (a ConvNeXt stack, no downsampling)."""

    def __init__(self, ops: Any, c: VocoderLayout) -> None:
        super().__init__()
        dims = c.dims
        stem = nn.Sequential(ops.Conv1d(c.mel_bins, dims[0], 7, padding=3, padding_mode="replicate"),
                             LayerNorm(dims[0], channels_first=True))
        self.channel_layers = nn.ModuleList(
            [stem, *(nn.Sequential(LayerNorm(dims[i - 1], channels_first=True), ops.Conv1d(dims[i - 1], dims[i], 1))
                     for i in range(1, len(dims)))])

        def block(dim: int) -> nn.Module:
            if len(c.kernels) == 1:
                return ConvNeXtBlock(ops, dim, c.kernels[0], c.mlp_ratio, c.layer_scale)
            return ParallelConvNeXtBlock(ops, dim, c.kernels, c.mlp_ratio, c.layer_scale)

        self.stages = nn.ModuleList(nn.Sequential(*(block(dim) for _ in range(depth)))
                                    for dim, depth in zip(dims, c.depths, strict=True))
        self.norm = LayerNorm(dims[-1], channels_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for channel_layer, stage in zip(self.channel_layers, self.stages, strict=True):
            x = stage(channel_layer(x))
        return self.norm(x)


class ResBlock(nn.Module):
    """Three (SiLU, dilated convolution, SiLU, convolution) residual steps."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(WNConv(channels, channels, kernel, padding=d * (kernel - 1) // 2, dilation=d)
                                    for d in DILATIONS)
        self.convs2 = nn.ModuleList(WNConv(channels, channels, kernel, padding=(kernel - 1) // 2)
                                    for _ in DILATIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = x + c2(F.silu(c1(F.silu(x))))
        return x


class Generator(nn.Module):
    """HiFi-GAN: features [N, C, frames] -> waveform [N, 1, frames x 512] in [-1, 1]."""

    def __init__(self, c: VocoderLayout) -> None:
        super().__init__()
        self.conv_pre = WNConv(c.dims[-1], c.width, c.pre_kernel, padding=(c.pre_kernel - 1) // 2)
        widths = [c.width // 2 ** i for i in range(len(c.rates) + 1)]
        self.ups = nn.ModuleList(WNConv(widths[i], widths[i + 1], k, stride=u, padding=(k - u) // 2, transposed=True)
                                 for i, (u, k) in enumerate(zip(c.rates, c.up_kernels, strict=True)))
        self.kinds = len(c.res_kernels)
        self.resblocks = nn.ModuleList(ResBlock(widths[i + 1], k) for i in range(len(c.rates)) for k in c.res_kernels)
        self.conv_post = WNConv(widths[-1], 1, c.post_kernel, padding=(c.post_kernel - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.silu(x))
            blocks = self.resblocks[i * self.kinds: (i + 1) * self.kinds]
            x = sum(block(x) for block in blocks) / self.kinds
        return torch.tanh(self.conv_post(F.silu(x)))


class Vocoder(nn.Module):
    """``decode``: log-mel [N, 128, frames] -> waveform [N, 1, frames x 512]; ``mel_transform``: the inverse
    direction's fixed transform."""

    def __init__(self, ops: Any, layout: VocoderLayout = VocoderLayout()) -> None:
        super().__init__()
        self.layout = layout
        self.backbone = Backbone(ops, layout)
        self.head = Generator(layout)
        self.mel_transform = LogMel(layout.mel_bins)

    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(mel))
