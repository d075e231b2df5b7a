"""BigVGAN v2's residual blocks, which LTX-2.3's vocoders use in place of HiFi-GAN's (``resblock`` "AMP1").

Each activation is periodic (Snake: x + sin^2(a x) / a, SnakeBeta: the
amplitude 1 / b learned apart, both with log-scale parameters) and
anti-aliased: the signal is upsampled x2 through a Kaiser-windowed sinc
filter (12 taps, edges replicated), activated, low-pass filtered and taken
back down x2. The filters follow from those settings and are computed here;
the files' copies (``upsample.filter``, ``downsample.lowpass.filter``) are
not read.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops

ANTIALIAS_TAPS = 12


@functools.lru_cache(maxsize=8)
def kaiser_sinc(cutoff: float, half_width: float, taps: int) -> torch.Tensor:
    """A low-pass filter [taps] (cutoff and transition half-width as fractions of the sample rate), summing
    to 1."""
    half = taps // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(taps, beta=beta, periodic=False, dtype=torch.float64)
    t = torch.arange(-half, half, dtype=torch.float64) + 0.5 if taps % 2 == 0 \
        else torch.arange(taps, dtype=torch.float64) - half
    taps_ = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
    return (taps_ / taps_.sum()).float()


def upsample(x: torch.Tensor, ratio: int = 2, taps: int = ANTIALIAS_TAPS) -> torch.Tensor:
    """x ``ratio`` by zero-stuffing and the Kaiser low-pass, edges replicated, length kept exact."""
    kernel = kaiser_sinc(0.5 / ratio, 0.6 / ratio, taps).to(x)
    pad = taps // ratio - 1
    left = pad * ratio + (taps - ratio) // 2
    right = pad * ratio + (taps - ratio + 1) // 2
    channels = x.shape[1]
    y = ratio * F.conv_transpose1d(F.pad(x, (pad, pad), mode="replicate"),
                                   kernel.view(1, 1, -1).expand(channels, -1, -1), stride=ratio, groups=channels)
    return y[..., left:-right]


def downsample(x: torch.Tensor, ratio: int = 2, taps: int = ANTIALIAS_TAPS) -> torch.Tensor:
    kernel = kaiser_sinc(0.5 / ratio, 0.6 / ratio, taps).to(x)
    left, right = taps // 2 - int(taps % 2 == 0), taps // 2
    channels = x.shape[1]
    return F.conv1d(F.pad(x, (left, right), mode="replicate"), kernel.view(1, 1, -1).expand(channels, -1, -1),
                    stride=ratio, groups=channels)


class Snake(nn.Module):
    """x + sin^2(a x) / b with a = exp(alpha) and b = exp(beta) (SnakeBeta) or a (Snake)."""

    def __init__(self, channels: int, beta: bool) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(channels))
        if beta:
            self.beta = nn.Parameter(torch.empty(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.exp(_ops.cast_weight(self, "alpha", x))[None, :, None]
        b = torch.exp(_ops.cast_weight(self, "beta", x))[None, :, None] if hasattr(self, "beta") else a
        return x + torch.sin(x * a).pow(2) / (b + 1e-9)


class Activation1d(nn.Module):
    """An anti-aliased activation (see the module's docstring)."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return downsample(self.act(upsample(x)))


def activation(channels: int, kind: str) -> Activation1d:
    return Activation1d(Snake(channels, beta=kind == "snakebeta"))


class AMPBlock(nn.Module):
    """Per dilation: activation, dilated conv, activation, conv, added back."""

    def __init__(self, ops: Any, dim: int, kernel: int, dilations: tuple[int, ...], kind: str) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(ops.Conv1d(dim, dim, kernel, dilation=d, padding=d * (kernel - 1) // 2)
                                    for d in dilations)
        self.convs2 = nn.ModuleList(ops.Conv1d(dim, dim, kernel, padding=(kernel - 1) // 2) for _ in dilations)
        self.acts1 = nn.ModuleList(activation(dim, kind) for _ in dilations)
        self.acts2 = nn.ModuleList(activation(dim, kind) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.acts1, self.acts2, strict=True):
            x = x + c2(a2(c1(a1(x))))
        return x


def is_filter_key(key: str) -> bool:
    """The anti-aliasing filters files keep beside the weights (computed here instead)."""
    return key.endswith((".upsample.filter", ".downsample.lowpass.filter"))
