"""The KL autoencoder of Stable Diffusion (LDM key layout): 8x spatial compression, 4 or 16 latent channels.

SD1.x/SD2.x/SDXL use 4 latent channels with 1x1 "quant" convolutions around
the latent; SD3's and Flux.1's autoencoder (Flux's ``ae``) is the same network
with 16 latent channels and no quant convolutions.

``encode_raw`` takes images in [-1, 1] (channels first) and returns the
posterior's mean, no sampling; ``decode_raw`` maps raw latents (not multiplied
by the sampler's scale factor) back to images in about [-1, 1]. The VAE object
(model/vae.py) adds IMAGE conversion, batching and tiling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DOWNSCALE = 8
LATENT_CHANNELS = 4


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, with 1x1 convolutions as projections."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (p(n).reshape(b, 1, c, h * w).transpose(2, 3) for p in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one pixel on the right and bottom only (as trained)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: `block` res blocks and an optional `downsample`/`upsample`."""

    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None, name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if resample is not None:
            self.add_module(name, resample)
        self.resample = name if resample is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.block:
            x = blk(x)
        if self.resample is not None:
            x = getattr(self, self.resample)(x)
        return x


class _Mid(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, ch: int = 128, mult: tuple[int, ...] = (1, 2, 4, 4), num_res: int = 2, z: int = LATENT_CHANNELS) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        levels = []
        cin = ch
        for i, m in enumerate(mult):
            blocks = []
            for _ in range(num_res):
                blocks.append(ResnetBlock(cin, ch * m))
                cin = ch * m
            levels.append(_Level(blocks, Downsample(cin) if i != len(mult) - 1 else None, "downsample"))
        self.down = nn.ModuleList(levels)
        self.mid = _Mid(cin)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, 2 * z, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)
        x = self.mid(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, ch: int = 128, mult: tuple[int, ...] = (1, 2, 4, 4), num_res: int = 2, z: int = LATENT_CHANNELS) -> None:
        super().__init__()
        cin = ch * mult[-1]
        self.conv_in = nn.Conv2d(z, cin, 3, padding=1)
        self.mid = _Mid(cin)
        levels: list[nn.Module] = [nn.Module()] * len(mult)
        for i in reversed(range(len(mult))):
            blocks = []
            for _ in range(num_res + 1):
                blocks.append(ResnetBlock(cin, ch * mult[i]))
                cin = ch * mult[i]
            levels[i] = _Level(blocks, Upsample(cin) if i != 0 else None, "upsample")
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, latent_channels: int = LATENT_CHANNELS, use_quant_conv: bool = True,
                 decoder_widths: tuple[int, ...] | None = None) -> None:
        """``decoder_widths``: the decoder's channels per level when they differ from the encoder's
        (Flux.2's small decoder), else the standard 128, 256, 512, 512."""
        super().__init__()
        self.latent_channels = latent_channels
        self.encoder = Encoder(z=latent_channels)
        self.decoder = Decoder(ch=1, mult=decoder_widths, z=latent_channels) if decoder_widths \
            else Decoder(z=latent_channels)
        if use_quant_conv:
            self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
            self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        else:
            self.quant_conv = self.post_quant_conv = None

    @property
    def device(self) -> torch.device:
        return self.decoder.conv_in.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv_in.weight.dtype

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean [B, latent_channels, h, w] of images in [-1, 1], channels first."""
        moments = self.encoder(x.to(device=self.device, dtype=self.dtype))
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return moments[:, : self.latent_channels].float()

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Images in about [-1, 1], channels first, of raw latents."""
        z = z.to(device=self.device, dtype=self.dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z).float()
