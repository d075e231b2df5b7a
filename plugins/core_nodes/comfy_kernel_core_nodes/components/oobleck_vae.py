"""The Oobleck audio autoencoder (Stable Audio's, ACE-Step 1.5's): stereo waveforms <-> 64-channel latents.

A stack of strided 1-d convolutions with weight normalisation and "snake"
activations (x + sin²(αx)/β, per channel, α and β stored as logarithms); each
block has three residual units with dilations 1, 3 and 9. The encoder ends in
twice the latent channels (mean and scale of the posterior); decoding is the
mirror image with transposed convolutions. Keys are ComfyUI's
(``encoder.layers.N...``, ``weight_g`` / ``weight_v``, 1-d ``alpha`` / ``beta``);
widths and strides are read from the file (see :func:`oobleck_layout`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class OobleckLayout:
    channels: int = 128
    multipliers: tuple[int, ...] = (1, 2, 4, 8, 16)
    strides: tuple[int, ...] = (2, 4, 4, 6, 10)
    latent_channels: int = 64
    audio_channels: int = 2


def oobleck_layout(shapes: dict[str, tuple[int, ...]], prefix: str = "") -> OobleckLayout:
    """Widths from the encoder's block convolutions, strides from their kernels (twice the stride)."""
    first = shapes[prefix + "encoder.layers.0.weight_v"]
    channels = int(first[0])
    widths, strides, i = [], [], 1
    while prefix + f"encoder.layers.{i}.layers.4.weight_v" in shapes:
        down = shapes[prefix + f"encoder.layers.{i}.layers.4.weight_v"]
        widths.append(int(down[0]) // channels)
        strides.append(int(down[-1]) // 2)
        i += 1
    latent = int(shapes[prefix + "decoder.layers.0.weight_v"][1])
    return OobleckLayout(channels, tuple(widths), tuple(strides), latent, int(first[1]))


class Snake(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.to(x).exp()[None, :, None]
        beta = self.beta.to(x).exp()[None, :, None]
        return x + (beta + 1e-9).reciprocal() * torch.sin(x * alpha).pow(2)


class WNConv(nn.Module):
    """A weight-normalised (transposed) 1-d convolution: weight = g · v / ‖v‖ per output (transposed: input) row."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                 bias: bool = True, transposed: bool = False) -> None:
        super().__init__()
        shape = (cin, cout, kernel) if transposed else (cout, cin, kernel)
        self.weight_v = nn.Parameter(torch.empty(shape))
        self.weight_g = nn.Parameter(torch.empty(shape[0], 1, 1))
        self.bias = nn.Parameter(torch.empty(cout)) if bias else None
        self.stride, self.padding, self.dilation, self.transposed = stride, padding, dilation, transposed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v.to(x)
        weight = self.weight_g.to(x) * v / v.norm(dim=(1, 2), keepdim=True)
        bias = self.bias.to(x) if self.bias is not None else None
        if self.transposed:
            return F.conv_transpose1d(x, weight, bias, self.stride, self.padding)
        return F.conv1d(x, weight, bias, self.stride, self.padding, self.dilation)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(Snake(channels), WNConv(channels, channels, 7, dilation=dilation,
                                                            padding=3 * dilation),
                                    Snake(channels), WNConv(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class EncoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(ResidualUnit(cin, 1), ResidualUnit(cin, 3), ResidualUnit(cin, 9), Snake(cin),
                                    WNConv(cin, cout, 2 * stride, stride, math.ceil(stride / 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(Snake(cin), WNConv(cin, cout, 2 * stride, stride, math.ceil(stride / 2),
                                                       transposed=True),
                                    ResidualUnit(cout, 1), ResidualUnit(cout, 3), ResidualUnit(cout, 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OobleckVAE(nn.Module):
    """``encode_raw(waveform [B, 2, T]) -> latent mean [B, 64, T / r]``; ``decode_raw(latent) -> waveform``."""

    def __init__(self, layout: OobleckLayout = OobleckLayout()) -> None:
        super().__init__()
        ch, mult, strides = layout.channels, (1, *layout.multipliers), layout.strides
        self.layout = layout
        encoder: list[nn.Module] = [WNConv(layout.audio_channels, ch, 7, padding=3)]
        encoder += [EncoderBlock(mult[i] * ch, mult[i + 1] * ch, strides[i]) for i in range(len(strides))]
        encoder += [Snake(mult[-1] * ch), WNConv(mult[-1] * ch, 2 * layout.latent_channels, 3, padding=1)]
        self.encoder = nn.Module()
        self.encoder.layers = nn.Sequential(*encoder)
        decoder: list[nn.Module] = [WNConv(layout.latent_channels, mult[-1] * ch, 7, padding=3)]
        decoder += [DecoderBlock(mult[i] * ch, mult[i - 1] * ch, strides[i - 1]) for i in range(len(strides), 0, -1)]
        decoder += [Snake(ch), WNConv(ch, layout.audio_channels, 7, padding=3, bias=False)]
        self.decoder = nn.Module()
        self.decoder.layers = nn.Sequential(*decoder)

    @property
    def ratio(self) -> int:
        return math.prod(self.layout.strides)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.layers[0].weight_v.dtype

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        mean, _scale = self.encoder.layers(x.to(self.dtype)).chunk(2, dim=1)
        return mean

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder.layers(z.to(self.dtype))
