"""HunyuanVideo 1.5's latent upsamplers (LatentUpscaleModelLoader's ``latent_upscale_models`` files).

Both work on latents already resized (bilinear) to the target size: the
``1080p`` upsampler is a VAE-decoder-like stack without resampling (causal
3-d residual blocks with RMS norms between an input convolution, whose
shortcut repeats the latent's channels, and an output convolution); the
``720p`` one is a plain stack of residual triples of causal convolutions.
Module names follow the files (``up.N.block.M.conv1.conv``,
``blocks.N.block.0.conv`` ...).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model.detection import Shapes
from .vae import CausalConv3d, ResBlock, RMSNorm, module_key


def _dtype(conv: nn.Module) -> torch.dtype:
    return getattr(conv, "compute_dtype", None) or conv.weight.dtype


class ResidualTriple(nn.Module):
    def __init__(self, ops: Any, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(CausalConv3d(ops, channels, channels), nn.SiLU(),
                                   CausalConv3d(ops, channels, channels), nn.SiLU(),
                                   CausalConv3d(ops, channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Upsampler720(nn.Module):
    def __init__(self, ops: Any, cin: int, cout: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.in_conv = CausalConv3d(ops, cin, hidden)
        self.blocks = nn.ModuleList(ResidualTriple(ops, hidden) for _ in range(blocks))
        self.out_conv = CausalConv3d(ops, hidden, cout)

    @property
    def dtype(self) -> torch.dtype:
        return _dtype(self.in_conv.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.in_conv(x)
        for blk in self.blocks:
            y = blk(y)
        return self.out_conv(y)


class UpsamplerStage(nn.Module):
    def __init__(self, ops: Any, cin: int, cout: int, blocks: int) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResBlock(ops, cin if j == 0 else cout, cout) for j in range(blocks))


class Upsampler1080(nn.Module):
    def __init__(self, ops: Any, z: int, cout: int, channels: tuple[int, ...], blocks: int = 2) -> None:
        super().__init__()
        self.repeat = channels[0] // z
        self.conv_in = CausalConv3d(ops, z, channels[0])
        self.up = nn.ModuleList()
        ch = channels[0]
        for target in channels:
            self.up.append(UpsamplerStage(ops, ch, target, blocks + 1))
            ch = target
        self.norm_out = RMSNorm(ch)
        self.conv_out = CausalConv3d(ops, ch, cout)

    @property
    def dtype(self) -> torch.dtype:
        return _dtype(self.conv_in.conv)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z) + z.repeat_interleave(self.repeat, dim=1)
        for stage in self.up:
            for blk in stage.block:
                x = blk(x)
        return self.conv_out(F.silu(self.norm_out(x)))


def _count(shapes: Shapes, head: str, tail: str) -> int:
    n = 0
    while f"{head}{n}{tail}" in shapes:
        n += 1
    return n


def upsampler_builder(shapes: Shapes) -> Any:
    """``make(ops)`` for the upsampler in a file, or None when the file holds neither kind."""
    if "blocks.0.block.0.conv.weight" in shapes:
        cin, hidden = int(shapes["in_conv.conv.weight"][1]), int(shapes["in_conv.conv.weight"][0])
        cout, blocks = int(shapes["out_conv.conv.weight"][0]), _count(shapes, "blocks.", ".block.0.conv.weight")
        return lambda ops: Upsampler720(ops, cin, cout, hidden, blocks)
    if "up.0.block.0.conv1.conv.weight" in shapes:
        stages = _count(shapes, "up.", ".block.0.conv1.conv.weight")
        channels = tuple(int(shapes[f"up.{i}.block.0.conv1.conv.weight"][0]) for i in range(stages))
        z, cout = int(shapes["conv_in.conv.weight"][1]), int(shapes["conv_out.conv.weight"][0])
        blocks = _count(shapes, "up.0.block.", ".conv1.conv.weight") - 1
        return lambda ops: Upsampler1080(ops, z, cout, channels, blocks)
    return None


class LatentUpsampler:
    """What LATENT_UPSCALE_MODEL sockets carry: ``resample_latent(latent) -> latent`` (float32, CPU)."""

    def __init__(self, path: str, shapes: Shapes, make: Any) -> None:
        from ...model.patcher import ModelPatcher
        from ...model.quant import network_weights
        from ...model.vae import VAEModel

        weights = network_weights(path, "", shapes, "HunyuanVideo 1.5 latent upsampler", "vae",
                                  lambda ops, compute: make(ops), rename=module_key)
        self.patcher = ModelPatcher(VAEModel(weights))

    @torch.no_grad()
    def resample_latent(self, latent: torch.Tensor) -> torch.Tensor:
        with self.patcher.use() as model:
            net = model.loaded_module
            device = next(net.parameters()).device
            return net(latent.to(device=device, dtype=net.dtype)).float().cpu()


def load_latent_upsampler(path: str) -> Any:
    """A HunyuanVideo 1.5 upsampler, or an LTX one (``families/ltx2/upsampler.py``)."""
    from ...model.files import tensor_shapes
    from ...model.loading import UnsupportedModel
    from ..ltx2.upsampler import load_ltx_upsampler

    shapes = tensor_shapes(path)
    make = upsampler_builder(shapes)
    if make is not None:
        return LatentUpsampler(path, shapes, make)
    ltx = load_ltx_upsampler(path, shapes)
    if ltx is None:
        import os

        raise UnsupportedModel(f"{os.path.basename(path)}: not a HunyuanVideo 1.5 or LTX latent upsampler")
    return ltx

