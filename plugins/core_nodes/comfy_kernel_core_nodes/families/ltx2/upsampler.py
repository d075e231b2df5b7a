"""LTX-Video / LTX-2 latent upsamplers (LatentUpscaleModelLoader's LTX files, LTXVLatentUpsampler's model).

A convolution stack on the VAE's un-normalised latents: an input
convolution, group norm and SiLU, residual blocks, the resampler, residual
blocks again and an output convolution. The resampler doubles height and
width (a 2-d convolution to 4x the channels and a pixel shuffle per frame),
doubles time (3-d, 2x, dropping the first new frame), or both (3-d, 8x); the
rational one scales height and width by num/den (a shuffle by num, then a
binomial blur with stride den). Its settings come from the file's ``config``
metadata, else from the weights' shapes. Module names are the files'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model.detection import Shapes

#: spatial scale -> (shuffle factor, blur stride)
RATIONAL = {0.75: (3, 4), 1.5: (3, 2), 2.0: (2, 1), 4.0: (4, 1)}


@dataclass(frozen=True)
class UpsamplerLayout:
    in_channels: int = 128
    mid_channels: int = 512
    blocks: int = 4
    dims: int = 3
    spatial: bool = True
    temporal: bool = False
    scale: float = 2.0
    rational: bool = False


def shuffle_time(x: torch.Tensor) -> torch.Tensor:
    """[B, (C, 2), F, H, W] -> [B, C, 2F, H, W]."""
    b, c2, f, h, w = x.shape
    return x.reshape(b, c2 // 2, 2, f, h, w).transpose(2, 3).reshape(b, c2 // 2, 2 * f, h, w)


def shuffle_space_time(x: torch.Tensor) -> torch.Tensor:
    """[B, (C, 2, 2, 2), F, H, W] -> [B, C, 2F, 2H, 2W]."""
    b, c8, f, h, w = x.shape
    x = x.reshape(b, c8 // 8, 2, 2, 2, f, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c8 // 8, 2 * f, 2 * h, 2 * w)


class ResBlock(nn.Module):
    def __init__(self, ops: Any, channels: int, dims: int) -> None:
        super().__init__()
        conv = ops.Conv2d if dims == 2 else ops.Conv3d
        self.conv1 = conv(channels, channels, 3, padding=1)
        self.norm1 = ops.GroupNorm(32, channels)
        self.conv2 = conv(channels, channels, 3, padding=1)
        self.norm2 = ops.GroupNorm(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        return F.silu(self.norm2(self.conv2(h)) + x)


class BlurDown(nn.Module):
    """A 5x5 binomial blur with stride ``stride`` on each channel of [N, C, H, W]."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        self.register_buffer("kernel", (torch.outer(k, k) / 256.0)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x
        weight = self.kernel.to(x).expand(x.shape[1], 1, 5, 5)
        return F.conv2d(x, weight, stride=self.stride, padding=2, groups=x.shape[1])


class RationalResampler(nn.Module):
    def __init__(self, ops: Any, channels: int, scale: float) -> None:
        super().__init__()
        self.num, den = RATIONAL[float(scale)]
        self.conv = ops.Conv2d(channels, self.num ** 2 * channels, 3, padding=1)
        self.blur_down = BlurDown(den)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur_down(F.pixel_shuffle(self.conv(x), self.num))


class LTXLatentUpsamplerNet(nn.Module):
    def __init__(self, layout: UpsamplerLayout, ops: Any) -> None:
        super().__init__()
        self.layout = c = layout
        conv = ops.Conv2d if c.dims == 2 else ops.Conv3d
        self.initial_conv = conv(c.in_channels, c.mid_channels, 3, padding=1)
        self.initial_norm = ops.GroupNorm(32, c.mid_channels)
        self.res_blocks = nn.ModuleList(ResBlock(ops, c.mid_channels, c.dims) for _ in range(c.blocks))
        if c.spatial and not c.temporal and c.rational:
            self.upsampler = RationalResampler(ops, c.mid_channels, c.scale)
        else:
            factor, up_conv = (8, ops.Conv3d) if c.spatial and c.temporal else \
                (4, ops.Conv2d) if c.spatial else (2, ops.Conv3d)
            self.upsampler = nn.Sequential(up_conv(c.mid_channels, factor * c.mid_channels, 3, padding=1))
        self.post_upsample_res_blocks = nn.ModuleList(ResBlock(ops, c.mid_channels, c.dims) for _ in range(c.blocks))
        self.final_conv = conv(c.mid_channels, c.in_channels, 3, padding=1)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self.final_conv, "compute_dtype", None) or self.final_conv.weight.dtype

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        c = self.layout
        if isinstance(self.upsampler, RationalResampler):
            return self.upsampler(x)
        out = self.upsampler[0](x)
        if c.spatial and c.temporal:
            return shuffle_space_time(out)
        return F.pixel_shuffle(out, 2) if c.spatial else shuffle_time(out)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Un-normalised latents [B, C, F, H, W] -> the same, upsampled."""
        c = self.layout
        b, frames = latent.shape[0], latent.shape[2]
        per_frame = c.dims == 2 or (c.spatial and not c.temporal)
        x = latent.movedim(2, 1).flatten(0, 1) if c.dims == 2 else latent
        x = F.silu(self.initial_norm(self.initial_conv(x)))
        for block in self.res_blocks:
            x = block(x)
        if per_frame and c.dims == 3:
            x = self._resample(x.movedim(2, 1).flatten(0, 1))
            x = x.unflatten(0, (b, frames)).movedim(1, 2)
        else:
            x = self._resample(x)
            if c.temporal and c.dims == 3:
                x = x[:, :, 1:]
        for block in self.post_upsample_res_blocks:
            x = block(x)
        x = self.final_conv(x)
        return x.unflatten(0, (b, frames)).movedim(1, 2) if c.dims == 2 else x


def layout_of(shapes: Shapes, config: dict[str, Any]) -> UpsamplerLayout | None:
    """The upsampler's settings (the ``config`` metadata, else read from the weights; the resampler's kind always
    from the weights), or None for another file."""
    if "post_upsample_res_blocks.0.conv2.bias" not in shapes or "initial_conv.weight" not in shapes:
        return None
    initial = shapes["initial_conv.weight"]
    mid = int(initial[0])
    blocks = sum(1 for k in shapes if k.startswith("res_blocks.") and k.endswith(".conv1.weight"))
    rational = "upsampler.conv.weight" in shapes
    if rational:
        factor = int(shapes["upsampler.conv.weight"][0]) // mid
        scale = next(s for s, (num, _) in RATIONAL.items() if num * num == factor and s != 0.75)
        spatial, temporal = True, False
    else:
        factor = int(shapes["upsampler.0.weight"][0]) // mid
        spatial, temporal, scale = factor in (4, 8), factor in (2, 8), 2.0
    return UpsamplerLayout(
        in_channels=int(config.get("in_channels", initial[1])), mid_channels=int(config.get("mid_channels", mid)),
        blocks=int(config.get("num_blocks_per_stage", blocks)), dims=int(config.get("dims", len(initial) - 2)),
        spatial=bool(config.get("spatial_upsample", spatial)), temporal=bool(config.get("temporal_upsample", temporal)),
        scale=float(config.get("spatial_scale", scale)), rational=rational)


class LTXLatentUpsampler:
    """What LATENT_UPSCALE_MODEL sockets carry for LTX files: ``upsample(latent)`` on un-normalised latents."""

    def __init__(self, path: str, shapes: Shapes, layout: UpsamplerLayout) -> None:
        from ...model.patcher import ModelPatcher
        from ...model.quant import network_weights
        from ...model.vae import VAEModel

        self.layout = layout
        weights = network_weights(path, "", shapes, "LTX latent upsampler", "vae",
                                  lambda ops, compute: LTXLatentUpsamplerNet(layout, ops),
                                  supported=(torch.bfloat16, torch.float32),
                                  rename=lambda key: None if key.endswith("blur_down.kernel") else key)
        self.patcher = ModelPatcher(VAEModel(weights))

    def resample_latent(self, latent: torch.Tensor) -> torch.Tensor:
        raise ValueError("LTX latent upsamplers run in LTXVLatentUpsampler (they work with the VAE's statistics)")

    @torch.no_grad()
    def upsample(self, latent: torch.Tensor) -> torch.Tensor:
        with self.patcher.use() as model:
            net = model.loaded_module
            device = next(net.parameters()).device
            return net(latent.to(device=device, dtype=net.dtype)).float().cpu()


def load_ltx_upsampler(path: str, shapes: Shapes) -> LTXLatentUpsampler | None:
    """An LTX latent upsampler file's model, or None when the file is not one."""
    from .audio_vae import file_config

    layout = layout_of(shapes, file_config(path))
    return None if layout is None else LTXLatentUpsampler(path, shapes, layout)

