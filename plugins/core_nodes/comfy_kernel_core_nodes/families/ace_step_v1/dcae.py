"""The deep-compression autoencoder (DC-AE) of ACE-Step 1.0's music VAE.

ACE-Step 1.0 does not compress waveforms directly: a stereo log-mel
spectrogram (2 channels x 128 mel bins x frames) is treated as an image and
squeezed 8x along both axes into 8 latent channels, so a latent is
[B, 8, 16, frames / 8]. The network is MIT-Han-Lab's DC-AE (as in Sana and
diffusers' ``AutoencoderDC``): residual convolution stages, strided
convolutions down and nearest-neighbour upsampling up, each with a
parameter-free shortcut (channel averaging / repeating around a pixel
(un)shuffle), and at the deepest stage EfficientViT blocks: ReLU linear
attention over multi-scale q/k/v plus a gated depthwise MLP. Norms are RMS norms
over channels with a bias.

Keys are the checkpoint's (``encoder.down_blocks.N.M...``,
``decoder.up_blocks.N.M...``); widths, depths, attention heads and multi-scale
kernels are read from the tensor shapes by :func:`dcae_layout`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model.detection import Shapes, count

#: the denominators of the linear attention are offset by this
ATTENTION_EPS = 1e-15


@dataclass(frozen=True)
class Stage:
    """One resolution of the encoder or decoder: ``depth`` blocks of ``width`` channels; ``scales`` are the
    kernels of the multi-scale q/k/v projections for an EfficientViT stage, None for a residual one."""

    width: int
    depth: int
    scales: tuple[int, ...] | None = None


@dataclass(frozen=True)
class DCAELayout:
    in_channels: int = 2
    latent_channels: int = 8
    encoder: tuple[Stage, ...] = (Stage(128, 2), Stage(256, 2), Stage(512, 3), Stage(1024, 3, (5,)))
    decoder: tuple[Stage, ...] = (Stage(128, 3), Stage(256, 3), Stage(512, 3), Stage(1024, 3, (5,)))
    head_dim: int = 32
    mlp_ratio: int = 4


def _stages(shapes: Shapes, root: str, first: int) -> tuple[tuple[Stage, ...], int | None, int]:
    """The stages under ``root`` (``...down_blocks`` / ``...up_blocks``), whose blocks start at index
    ``first`` in every stage but the deepest; also the attention head width (None without multi-scale
    projections to read it from) and the MLP's expansion."""
    levels = count(shapes, re.escape(root) + r"\.(\d+)\.")
    stages, head_dim, mlp_ratio = [], None, 4
    for i in range(levels):
        start = first if i < levels - 1 else 0
        base = f"{root}.{i}."
        depth = count(shapes, re.escape(base) + r"(\d+)\.") - start
        if first == 0 and i < levels - 1:
            depth -= 1  # the encoder's downsampler closes the stage
        block = f"{base}{start}."
        if block + "conv1.weight" in shapes:
            stages.append(Stage(int(shapes[block + "conv1.weight"][0]), depth))
            continue
        width = int(shapes[block + "attn.to_q.weight"][1])
        n = count(shapes, re.escape(block) + r"attn\.to_qkv_multiscale\.(\d+)\.")
        scales = tuple(int(shapes[f"{block}attn.to_qkv_multiscale.{j}.proj_in.weight"][-1]) for j in range(n))
        if n:
            head_dim = int(shapes[f"{block}attn.to_qkv_multiscale.0.proj_out.weight"][1])
        mlp_ratio = int(shapes[block + "conv_out.conv_inverted.weight"][0]) // (2 * width)
        stages.append(Stage(width, depth, scales))
    return tuple(stages), head_dim, mlp_ratio


def dcae_layout(shapes: Shapes, prefix: str = "") -> DCAELayout:
    """The DC-AE stored under ``prefix`` (``vae.dcae.``, say), every size read from the shapes.

    The released file downsamples with stride-2 convolutions and upsamples by interpolation; the
    pixel-(un)shuffle variants of the DC-AE paper are refused.
    """
    encoder, head_dim, mlp_ratio = _stages(shapes, prefix + "encoder.down_blocks", 0)
    decoder, dec_head_dim, _ = _stages(shapes, prefix + "decoder.up_blocks", 1)
    layout = DCAELayout(in_channels=int(shapes[prefix + "encoder.conv_in.weight"][1]),
                        latent_channels=int(shapes[prefix + "encoder.conv_out.weight"][0]),
                        encoder=encoder, decoder=decoder, head_dim=head_dim or dec_head_dim or DCAELayout.head_dim,
                        mlp_ratio=mlp_ratio)
    for i in range(len(encoder) - 1):
        down = shapes[f"{prefix}encoder.down_blocks.{i}.{encoder[i].depth}.conv.weight"]
        up = shapes[f"{prefix}decoder.up_blocks.{i}.0.conv.weight"]
        if down[0] != encoder[i + 1].width or up[0] != decoder[i].width:
            raise ValueError("this DC-AE resamples by pixel (un)shuffling; ACE-Step 1.0's uses convolutions")
    return layout


class RMSNorm(nn.Module):
    """RMS norm over the last axis with a learned scale and bias."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x), self.eps) + self.bias.to(x)


def channel_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm`` over the channels of [B, C, H, W]."""
    return norm(x.movedim(1, -1)).movedim(-1, 1)


class ResBlock(nn.Module):
    def __init__(self, ops: Any, channels: int) -> None:
        super().__init__()
        self.conv1 = ops.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = ops.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = RMSNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + channel_norm(self.norm, self.conv2(F.silu(self.conv1(x))))


class MultiscaleProjection(nn.Module):
    """q, k and v blurred by a depthwise k x k convolution, then mixed within each head (grouped 1x1)."""

    def __init__(self, ops: Any, channels: int, heads: int, kernel: int) -> None:
        super().__init__()
        self.proj_in = ops.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False)
        self.proj_out = ops.Conv2d(channels, channels, 1, groups=3 * heads, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.proj_in(x))


class LinearAttention(nn.Module):
    """Sana's multi-scale ReLU linear attention, with a residual connection.

    The q/k/v maps and their multi-scale copies are concatenated along channels
    and cut into consecutive groups of 3 x head_dim channels, each read as
    (q, k, v) of one head, as the reference does. Maps of more than head_dim
    positions use the linear form in float32 (the values get a row of ones whose
    product is the normaliser); smaller ones the quadratic form.
    """

    def __init__(self, ops: Any, channels: int, head_dim: int, scales: tuple[int, ...]) -> None:
        super().__init__()
        self.head_dim = head_dim
        heads = channels // head_dim
        inner = heads * head_dim
        self.to_q = ops.Linear(channels, inner, bias=False)
        self.to_k = ops.Linear(channels, inner, bias=False)
        self.to_v = ops.Linear(channels, inner, bias=False)
        self.to_qkv_multiscale = nn.ModuleList(MultiscaleProjection(ops, 3 * inner, heads, k) for k in scales)
        self.to_out = ops.Linear(inner * (1 + len(scales)), channels, bias=False)
        self.norm_out = RMSNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = x.movedim(1, -1)
        qkv = torch.cat([self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)], dim=-1).movedim(-1, 1)
        qkv = torch.cat([qkv, *(project(qkv) for project in self.to_qkv_multiscale)], dim=1)
        linear = h * w > self.head_dim
        if linear:
            qkv = qkv.float()
        q, k, v = qkv.reshape(b, -1, 3 * self.head_dim, h * w).chunk(3, dim=2)
        q, k = F.relu(q), F.relu(k)
        if linear:
            v = F.pad(v, (0, 0, 0, 1), value=1.0)
            out = (v @ k.transpose(-1, -2)) @ q
            out = (out[:, :, :-1] / (out[:, :, -1:] + ATTENTION_EPS)).to(x.dtype)
        else:
            scores = (k.transpose(-1, -2) @ q).float()
            scores = scores / (scores.sum(dim=2, keepdim=True) + ATTENTION_EPS)
            out = v @ scores.to(v.dtype)
        out = self.to_out(out.reshape(b, -1, h, w).movedim(1, -1))
        return x + self.norm_out(out).movedim(-1, 1)


class GatedConvMLP(nn.Module):
    """1x1 expansion, 3x3 depthwise convolution, SiLU gate, 1x1 projection, RMS norm, residual."""

    def __init__(self, ops: Any, channels: int, ratio: int) -> None:
        super().__init__()
        hidden = ratio * channels
        self.conv_inverted = ops.Conv2d(channels, 2 * hidden, 1)
        self.conv_depth = ops.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.conv_point = ops.Conv2d(hidden, channels, 1, bias=False)
        self.norm = RMSNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.conv_depth(F.silu(self.conv_inverted(x))).chunk(2, dim=1)
        return x + channel_norm(self.norm, self.conv_point(h * F.silu(gate)))


class EfficientViTBlock(nn.Module):
    def __init__(self, ops: Any, channels: int, head_dim: int, scales: tuple[int, ...], ratio: int) -> None:
        super().__init__()
        self.attn = LinearAttention(ops, channels, head_dim, scales)
        self.conv_out = GatedConvMLP(ops, channels, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.attn(x))


class Downsample(nn.Module):
    """A stride-2 convolution plus the input pixel-unshuffled and averaged down to the output width."""

    def __init__(self, ops: Any, cin: int, cout: int) -> None:
        super().__init__()
        self.group = 4 * cin // cout
        self.conv = ops.Conv2d(cin, cout, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + F.pixel_unshuffle(x, 2).unflatten(1, (-1, self.group)).mean(dim=2)


class Upsample(nn.Module):
    """Nearest-neighbour 2x and a convolution, plus the input's channels repeated and pixel-shuffled."""

    def __init__(self, ops: Any, cin: int, cout: int) -> None:
        super().__init__()
        self.repeats = 4 * cout // cin
        self.conv = ops.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = F.pixel_shuffle(x.repeat_interleave(self.repeats, dim=1), 2)
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest")) + shortcut


def _blocks(ops: Any, stage: Stage, layout: DCAELayout) -> list[nn.Module]:
    if stage.scales is None:
        return [ResBlock(ops, stage.width) for _ in range(stage.depth)]
    return [EfficientViTBlock(ops, stage.width, layout.head_dim, stage.scales, layout.mlp_ratio)
            for _ in range(stage.depth)]


class Encoder(nn.Module):
    def __init__(self, ops: Any, layout: DCAELayout) -> None:
        super().__init__()
        stages = layout.encoder
        self.conv_in = ops.Conv2d(layout.in_channels, stages[0].width, 3, padding=1)
        self.down_blocks = nn.ModuleList(
            nn.Sequential(*_blocks(ops, stage, layout),
                          *([Downsample(ops, stage.width, stages[i + 1].width)] if i < len(stages) - 1 else []))
            for i, stage in enumerate(stages))
        self.conv_out = ops.Conv2d(stages[-1].width, layout.latent_channels, 3, padding=1)
        self.group = stages[-1].width // layout.latent_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for stage in self.down_blocks:
            x = stage(x)
        return self.conv_out(x) + x.unflatten(1, (-1, self.group)).mean(dim=2)


class Decoder(nn.Module):
    def __init__(self, ops: Any, layout: DCAELayout) -> None:
        super().__init__()
        stages = layout.decoder
        self.conv_in = ops.Conv2d(layout.latent_channels, stages[-1].width, 3, padding=1)
        self.repeats = stages[-1].width // layout.latent_channels
        self.up_blocks = nn.ModuleList(
            nn.Sequential(*([Upsample(ops, stages[i + 1].width, stage.width)] if i < len(stages) - 1 else []),
                          *_blocks(ops, stage, layout))
            for i, stage in enumerate(stages))
        self.norm_out = RMSNorm(stages[0].width)
        self.conv_out = ops.Conv2d(stages[0].width, layout.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z) + z.repeat_interleave(self.repeats, dim=1)
        for stage in reversed(self.up_blocks):
            x = stage(x)
        return self.conv_out(F.relu(channel_norm(self.norm_out, x)))


class DCAE(nn.Module):
    """``encoder``: normalised log-mel [B, 2, 128, frames] -> [B, 8, 16, frames / 8]; ``decoder``: back."""

    def __init__(self, ops: Any, layout: DCAELayout = DCAELayout()) -> None:
        super().__init__()
        self.layout = layout
        self.encoder = Encoder(ops, layout)
        self.decoder = Decoder(ops, layout)
