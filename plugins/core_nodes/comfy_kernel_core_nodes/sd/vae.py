"""The SD KL autoencoder (VAE) in the LDM key layout, with plain and tiled encode/decode.

Images are ComfyUI IMAGE tensors [B, H, W, 3] in [0, 1]; latents are raw VAE
latents [B, 4, H/8, W/8] (not multiplied by the 0.18215 scale factor, which is
the sampler's business). Encoding returns the posterior's mean, no sampling.
"""

from __future__ import annotations

from collections.abc import Callable

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
    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.quant_conv = nn.Conv2d(2 * LATENT_CHANNELS, 2 * LATENT_CHANNELS, 1)
        self.post_quant_conv = nn.Conv2d(LATENT_CHANNELS, LATENT_CHANNELS, 1)

    @property
    def device(self) -> torch.device:
        return self.quant_conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean [B, 4, h, w] of images in [-1, 1], channels first."""
        moments = self.quant_conv(self.encoder(x.to(device=self.device, dtype=self.dtype)))
        return moments[:, :LATENT_CHANNELS].float()

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Images in about [-1, 1], channels first, of raw latents."""
        return self.decoder(self.post_quant_conv(z.to(device=self.device, dtype=self.dtype))).float()


def crop_to_multiple(pixels: torch.Tensor, multiple: int = DOWNSCALE) -> torch.Tensor:
    """Centre-crop IMAGE [B, H, W, C] so H and W are multiples of `multiple`."""
    h, w = pixels.shape[1], pixels.shape[2]
    nh, nw = (h // multiple) * multiple, (w // multiple) * multiple
    if (nh, nw) == (h, w):
        return pixels
    top, left = (h % multiple) // 2, (w % multiple) // 2
    return pixels[:, top : top + nh, left : left + nw, :]


def _pixels_to_model(pixels: torch.Tensor) -> torch.Tensor:
    return crop_to_multiple(pixels)[..., :3].movedim(-1, 1) * 2.0 - 1.0


def _model_to_pixels(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)


@torch.no_grad()
def encode(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    """VAEEncode: IMAGE [B, H, W, C] in [0, 1] -> raw latent [B, 4, H/8, W/8] (float32, on the image's device)."""
    return vae.encode_raw(_pixels_to_model(pixels)).to(pixels.device)


@torch.no_grad()
def decode(vae: AutoencoderKL, latent: torch.Tensor) -> torch.Tensor:
    """VAEDecode: raw latent [B, 4, h, w] -> IMAGE [B, 8h, 8w, 3] in [0, 1] (float32, on the latent's device)."""
    return _model_to_pixels(vae.decode_raw(latent)).to(latent.device)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - overlap, max(tile - overlap, 1)))
    return [max(0, min(size - overlap, s)) for s in starts]


def tiled_map(
    x: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    tile: tuple[int, int],
    overlap: int,
    scale: float,
    out_channels: int,
) -> torch.Tensor:
    """Apply a resolution-changing `fn` tile by tile and blend the tiles with linear feathering.

    `x` is [B, C, H, W]; tiles are (tile_h, tile_w) input pixels overlapping by
    `overlap`; each output tile is `scale` times larger and is weighted by a mask
    that ramps up over the (scaled) overlap at every edge.
    """
    b, _, h, w = x.shape
    th, tw = tile
    out = torch.zeros(b, out_channels, round(h * scale), round(w * scale), device=x.device)
    weight = torch.zeros(b, 1, out.shape[2], out.shape[3], device=x.device)
    feather = round(overlap * scale)
    for y in _tile_starts(h, th, overlap):
        for xs in _tile_starts(w, tw, overlap):
            piece = x[:, :, y : y + th, xs : xs + tw]
            result = fn(piece).to(out.device).float()
            mask = torch.ones(1, 1, result.shape[2], result.shape[3], device=x.device)
            for dim in (2, 3):
                if feather >= mask.shape[dim]:
                    continue
                for t in range(feather):
                    a = (t + 1) / feather
                    mask.narrow(dim, t, 1).mul_(a)
                    mask.narrow(dim, mask.shape[dim] - 1 - t, 1).mul_(a)
            oy, ox = round(y * scale), round(xs * scale)
            out[:, :, oy : oy + result.shape[2], ox : ox + result.shape[3]] += result * mask
            weight[:, :, oy : oy + result.shape[2], ox : ox + result.shape[3]] += mask
    return out / weight


@torch.no_grad()
def decode_tiled(vae: AutoencoderKL, latent: torch.Tensor, tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
    """VAEDecodeTiled: like `decode`, in tiles of `tile_size` output pixels overlapping by `overlap` pixels.

    As in ComfyUI, three tilings (square, wide, tall) are averaged so the seams of
    one are hidden by the others; the overlap is limited to a quarter of the tile.
    """
    overlap = min(overlap, tile_size // 4)
    t, o = max(tile_size // DOWNSCALE, 1), overlap // DOWNSCALE
    passes = [(t * 2, t // 2), (t // 2, t * 2), (t, t)]
    total = sum(tiled_map(latent, vae.decode_raw, (th, tw), o, DOWNSCALE, 3) for th, tw in passes)
    return _model_to_pixels(total / len(passes)).to(latent.device)


@torch.no_grad()
def encode_tiled(vae: AutoencoderKL, pixels: torch.Tensor, tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
    """VAEEncodeTiled: like `encode`, in tiles of `tile_size` pixels overlapping by `overlap`; three tilings averaged."""
    x = _pixels_to_model(pixels)
    t, overlap = tile_size, min(overlap, tile_size // 4)
    passes = [(t, t), (t // 2, t * 2), (t * 2, t // 2)]
    total = sum(tiled_map(x, vae.encode_raw, (th, tw), overlap, 1 / DOWNSCALE, LATENT_CHANNELS) for th, tw in passes)
    return (total / len(passes)).to(pixels.device)
