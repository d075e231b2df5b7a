"""LTX-2.3's vocoder with bandwidth extension: a BigVGAN vocoder at 16 kHz, then a second one that adds the
upper band up to 48 kHz.

The first vocoder (``vocoder.vocoder.``) turns the log-mels into a 16 kHz
waveform, zero-padded at the end to whole 80-sample hops. Its log-mels are
taken again (``vocoder.mel_stft.``: a causal STFT, 512-sample frames every 80
samples with the left edge zero-padded, as a convolution with the file's
windowed DFT bases, then the file's mel filters, log of at least 1e-5) and
the second vocoder (``vocoder.bwe_generator.``, no final activation) makes a
residual at 48 kHz that is added to the first waveform upsampled x3 by a
Hann-windowed sinc (6 zero crossings, roll-off 0.99, edges replicated); the
sum is clamped to [-1, 1] and cut to 3 x the first waveform's length. Rates,
hop and strides come from the file's ``config`` metadata (``vocoder.bwe``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops


@dataclass(frozen=True)
class BWELayout:
    generator: Any  # the bandwidth extender's VocoderLayout
    input_rate: int = 16000
    output_rate: int = 48000
    hop_length: int = 80
    n_fft: int = 512
    mels: int = 64


@functools.lru_cache(maxsize=4)
def hann_sinc(ratio: int) -> tuple[torch.Tensor, int]:
    """The x``ratio`` interpolation filter and its width in input samples (6 zero crossings, roll-off 0.99)."""
    rolloff, crossings = 0.99, 6
    width = math.ceil(crossings / rolloff)
    t = (torch.arange(2 * width * ratio + 1, dtype=torch.float64) / ratio - width) * rolloff
    window = torch.cos(t.clamp(-crossings, crossings) * math.pi / crossings / 2) ** 2
    return (torch.sinc(t) * window * rolloff / ratio).float(), width


def resample_up(x: torch.Tensor, ratio: int) -> torch.Tensor:
    """[B, C, T] -> [B, C, ratio x T]."""
    kernel, width = hann_sinc(ratio)
    taps, channels = kernel.shape[0], x.shape[1]
    y = ratio * F.conv_transpose1d(F.pad(x, (width, width), mode="replicate"),
                                   kernel.to(x).view(1, 1, -1).expand(channels, -1, -1), stride=ratio,
                                   groups=channels)
    return y[..., 2 * width * ratio: -(taps - ratio)]


class STFTBases(nn.Module):
    def __init__(self, n_fft: int) -> None:
        super().__init__()
        self.forward_basis = nn.Parameter(torch.empty(n_fft + 2, 1, n_fft))
        self.inverse_basis = nn.Parameter(torch.empty(n_fft + 2, 1, n_fft))


class MelSTFT(nn.Module):
    """The causal log-mel spectrogram with the file's bases and filters."""

    def __init__(self, n_fft: int, mels: int, hop_length: int) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.stft_fn = STFTBases(n_fft)
        self.mel_basis = nn.Parameter(torch.empty(mels, n_fft // 2 + 1))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[N, T] -> [N, mels, frames]."""
        basis = _ops.cast_weight(self.stft_fn, "forward_basis", waveform)
        x = F.pad(waveform.unsqueeze(1), (max(0, basis.shape[-1] - self.hop_length), 0))
        spec = F.conv1d(x, basis, stride=self.hop_length)
        real, imag = spec.chunk(2, dim=1)
        magnitude = torch.sqrt(real ** 2 + imag ** 2)
        mel = torch.matmul(_ops.cast_weight(self, "mel_basis", magnitude), magnitude)
        return torch.log(mel.clamp(min=1e-5))


class VocoderWithBWE(nn.Module):
    """See the module's docstring; ``forward`` takes log-mels [B, C, T, M] as :class:`.audio_vae.Vocoder` does."""

    def __init__(self, ops: Any, layout: Any, bwe: BWELayout) -> None:
        from .audio_vae import Vocoder

        super().__init__()
        self.bwe = bwe
        self.vocoder = Vocoder(ops, layout)
        self.bwe_generator = Vocoder(ops, bwe.generator)
        self.mel_stft = MelSTFT(bwe.n_fft, bwe.mels, bwe.hop_length)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.vocoder(mel)
        b, channels, samples = x.shape
        hop = self.bwe.hop_length
        x = F.pad(x, (0, -samples % hop))
        mels = self.mel_stft(x.flatten(0, 1)).unflatten(0, (b, channels))
        residual = self.bwe_generator(mels.transpose(2, 3))
        ratio = self.bwe.output_rate // self.bwe.input_rate
        out = (residual + resample_up(x, ratio)).clamp(-1, 1)
        return out[..., : samples * self.bwe.output_rate // self.bwe.input_rate]
