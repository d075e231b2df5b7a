"""The tiny autoencoder (TAESD family): a few 64-wide convolution blocks per 2x scale, 8x spatial overall.

Node packs build their own tiny decoders from these parts (a checkpoint's
keys are positional indices of an ``nn.Sequential``: ``N.conv.0.weight`` is a
:class:`Block`, ``N.weight`` a :func:`conv`), so the layer names and the
order of layers follow the released ``taesd_encoder``/``taesd_decoder`` files.
The FLUX.2 variant adds a group-normalised 1x1 branch in front of each block
(``use_midblock_gn``, keys ``pool.0`` / ``pool.1`` / ``pool.3``).

The decoder's input is clamped softly to +-3 (``tanh(x / 3) * 3``); the
encoder takes images in [0, 1] and the decoder returns them in [0, 1]
(:class:`TinyAutoencoder` converts from and to [-1, 1]).
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.files import read_state_dict

WIDTH = 64


def conv(n_in: int, n_out: int, **kwargs: object) -> nn.Conv2d:
    """A 3x3 convolution keeping the size (``stride=2`` halves it)."""
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Three 3x3 convolutions with ReLUs, plus a 1x1 skip when the width changes, then ReLU."""

    def __init__(self, n_in: int, n_out: int, use_midblock_gn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool: nn.Module | None = None
        if use_midblock_gn:
            wide = n_in * 4
            self.pool = nn.Sequential(nn.Conv2d(n_in, wide, 1, bias=False), nn.GroupNorm(4, wide), nn.ReLU(),
                                      nn.Conv2d(wide, n_in, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def Encoder(latent_channels: int = 4, use_midblock_gn: bool = False) -> nn.Sequential:
    """Image [B, 3, H, W] in [0, 1] -> latent [B, C, H/8, W/8]."""
    layers: list[nn.Module] = [conv(3, WIDTH), Block(WIDTH, WIDTH, use_midblock_gn)]
    for _ in range(3):
        layers += [conv(WIDTH, WIDTH, stride=2, bias=False)] + [Block(WIDTH, WIDTH, use_midblock_gn) for _ in range(3)]
    layers.append(conv(WIDTH, latent_channels))
    return nn.Sequential(*layers)


def Decoder(latent_channels: int = 4, use_midblock_gn: bool = False) -> nn.Sequential:
    """Latent [B, C, h, w] -> image [B, 3, 8h, 8w] in about [0, 1]."""
    layers: list[nn.Module] = [Clamp(), conv(latent_channels, WIDTH), nn.ReLU()]
    for _ in range(3):
        layers += [Block(WIDTH, WIDTH, use_midblock_gn) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False)]
    layers += [Block(WIDTH, WIDTH, use_midblock_gn), conv(WIDTH, 3)]
    return nn.Sequential(*layers)


class TinyAutoencoder(nn.Module):
    """Encoder and decoder with the VAE's latent scale and shift (``vae_scale``, ``vae_shift``).

    ``encode`` takes images in [-1, 1] and ``decode`` returns them in [-1, 1],
    like the full VAEs, so the two can stand in for each other in previews.
    """

    latent_magnitude = 3
    latent_shift = 0.5

    def __init__(self, encoder_path: str | None = None, decoder_path: str | None = None,
                 latent_channels: int = 4, use_midblock_gn: bool = False) -> None:
        super().__init__()
        self.taesd_encoder = Encoder(latent_channels, use_midblock_gn)
        self.taesd_decoder = Decoder(latent_channels, use_midblock_gn)
        self.vae_scale = nn.Parameter(torch.tensor(1.0))
        self.vae_shift = nn.Parameter(torch.tensor(0.0))
        if encoder_path is not None:
            self.taesd_encoder.load_state_dict(read_state_dict(encoder_path))
        if decoder_path is not None:
            self.taesd_decoder.load_state_dict(read_state_dict(decoder_path))

    @staticmethod
    def scale_latents(x: torch.Tensor) -> torch.Tensor:
        """Raw latents -> [0, 1] (for storing them as 8-bit images)."""
        return x.div(2 * TinyAutoencoder.latent_magnitude).add(TinyAutoencoder.latent_shift).clamp(0, 1)

    @staticmethod
    def unscale_latents(x: torch.Tensor) -> torch.Tensor:
        return x.sub(TinyAutoencoder.latent_shift).mul(2 * TinyAutoencoder.latent_magnitude)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.taesd_decoder((x - self.vae_shift) * self.vae_scale).sub(0.5).mul(2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.taesd_encoder(x * 0.5 + 0.5) / self.vae_scale + self.vae_shift
