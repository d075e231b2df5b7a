"""The SD1.x denoising UNet (LDM "openaimodel" layout), built from a layout derived from the keys.

Submodule names reproduce the checkpoint keys under `model.diffusion_model.`
(`input_blocks.N.M`, `middle_block`, `output_blocks`, `time_embed`, `out`), so
a state dict loads without renaming. Attention uses PyTorch's
scaled_dot_product_attention, which picks the best kernel for the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .model_sampling import denoised_from_eps, scale_model_input, sigma_to_timestep


@dataclass(frozen=True)
class UNetConfig:
    """Layout of a UNet; transformer depths are per res block (input side, output side)."""

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    transformer_depth: tuple[int, ...]
    transformer_depth_output: tuple[int, ...]
    transformer_depth_middle: int | None
    context_dim: int
    num_heads: int = 8
    use_linear_in_transformer: bool = False
    adm_in_channels: int | None = None

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of the timesteps: cosines first, then sines."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _group_norm(channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=eps)


class ResBlock(nn.Module):
    def __init__(self, channels: int, out_channels: int, emb_dim: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(_group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(
            _group_norm(out_channels), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 (or to the size of the matching skip tensor), then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class Attention(nn.Module):
    """Multi-head attention; self-attention when no context is given."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        context_dim = context_dim or dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, c = x.shape
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k = self.to_k(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, c))


class GEGLU(nn.Module):
    """Linear projection to value and gate halves; value * GELU(gate) with the exact (erf) GELU."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = Attention(dim, heads)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, heads, context_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Image features as a token sequence: self-attention, cross-attention to the text, feed-forward."""

    def __init__(self, channels: int, heads: int, depth: int, context_dim: int, use_linear: bool = False) -> None:
        super().__init__()
        self.use_linear = use_linear
        self.norm = _group_norm(channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels) if use_linear else nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(BasicTransformerBlock(channels, heads, context_dim) for _ in range(depth))
        self.proj_out = nn.Linear(channels, channels) if use_linear else nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.flatten(2).transpose(1, 2)
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(b, c, h, w)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class TimestepBlock(nn.Sequential):
    """A block of the UNet: its parts receive the time embedding, the context or the skip size as they need."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, up_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, up_size)
            else:
                x = layer(x)
        return x


class UNetModel(nn.Module):
    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = c = config
        mc, emb_dim = c.model_channels, c.time_embed_dim
        heads = c.num_heads

        def transformer(ch: int, depth: int) -> SpatialTransformer:
            return SpatialTransformer(ch, heads, depth, c.context_dim, c.use_linear_in_transformer)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_blocks = nn.ModuleList([TimestepBlock(nn.Conv2d(c.in_channels, mc, 3, padding=1))])
        skip_channels = [mc]
        ch = mc
        block = 0
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks[level]):
                layers: list[nn.Module] = [ResBlock(ch, mult * mc, emb_dim)]
                ch = mult * mc
                if c.transformer_depth[block] > 0:
                    layers.append(transformer(ch, c.transformer_depth[block]))
                block += 1
                self.input_blocks.append(TimestepBlock(*layers))
                skip_channels.append(ch)
            if level != len(c.channel_mult) - 1:
                self.input_blocks.append(TimestepBlock(Downsample(ch)))
                skip_channels.append(ch)

        self.middle_block: TimestepBlock | None = None
        if c.transformer_depth_middle is not None:
            middle: list[nn.Module] = [ResBlock(ch, ch, emb_dim)]
            if c.transformer_depth_middle >= 0:
                middle += [transformer(ch, c.transformer_depth_middle), ResBlock(ch, ch, emb_dim)]
            self.middle_block = TimestepBlock(*middle)

        self.output_blocks = nn.ModuleList()
        block = 0
        for level in reversed(range(len(c.channel_mult))):
            mult = c.channel_mult[level]
            for i in range(c.num_res_blocks[level] + 1):
                layers = [ResBlock(ch + skip_channels.pop(), mult * mc, emb_dim)]
                ch = mult * mc
                if c.transformer_depth_output[block] > 0:
                    layers.append(transformer(ch, c.transformer_depth_output[block]))
                block += 1
                if level and i == c.num_res_blocks[level]:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepBlock(*layers))

        self.out = nn.Sequential(_group_norm(ch), nn.SiLU(), nn.Conv2d(mc, c.out_channels, 3, padding=1))

    @property
    def dtype(self) -> torch.dtype:
        return self.out[2].weight.dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Noise prediction (float32) for latents x [B, 4, h, w] at integer-valued timesteps [B]."""
        dtype, device = self.dtype, self.out[2].weight.device
        emb = self.time_embed(timestep_embedding(timesteps.to(device), self.config.model_channels).to(dtype))
        context = context.to(device=device, dtype=dtype)
        h = x.to(device=device, dtype=dtype)
        skips = []
        for blk in self.input_blocks:
            h = blk(h, emb, context)
            skips.append(h)
        if self.middle_block is not None:
            h = self.middle_block(h, emb, context)
        for blk in self.output_blocks:
            h = torch.cat([h, skips.pop()], dim=1)
            up_size = tuple(skips[-1].shape[2:]) if skips else None
            h = blk(h, emb, context, up_size)
        return self.out(h).float()


@torch.no_grad()
def predict_noise(unet: UNetModel, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """eps for the sampler state x at noise level sigma [B] (input scaled, sigma mapped to its timestep)."""
    sigma = sigma.reshape(-1).float()
    return unet(scale_model_input(x, sigma), sigma_to_timestep(sigma), context).to(x.device)


@torch.no_grad()
def denoise(unet: UNetModel, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """x0 prediction x - sigma * eps (what ComfyUI's samplers call "denoised")."""
    sigma = sigma.reshape(-1).float()
    return denoised_from_eps(x, predict_noise(unet, x, sigma, context), sigma.to(x.device))
