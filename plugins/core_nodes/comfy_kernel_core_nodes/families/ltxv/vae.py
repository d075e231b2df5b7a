"""LTX-Video 0.9's causal video VAE: 128 latent channels, 32x spatial and 8x temporal compression.

Pixels are folded 4x4 into channels (48 = 3 x 4 x 4). The encoder runs causal
3-d convolutions (the first frame repeated in front) through residual stages
and downsamplers; the decoder runs non-causal ones (first and last frames
repeated) through residual stages and depth-to-space upsamplers. A clip of
1 + 8k frames becomes 1 + k latent frames. Norms are parameter-free RMS norms
over channels; blocks that change the width add a layer-normed 1x1 shortcut.

Three released layouts, told apart by their keys:

* 0.9.0: strided-convolution downsamplers, plain depth-to-space upsamplers;
* 0.9.1: the same encoder; a wider decoder whose upsamplers halve the width
  and add a repeated-channel shortcut, whose residual blocks add per-channel
  scaled spatial noise and are modulated by an embedding of the decode
  timestep (the last norm too);
* 0.9.5 and later: space-to-depth downsamplers whose shortcut averages
  channel groups (time, space, then space-time twice), and the 0.9.1 decoder
  without the noise.

Decoding a timestep-conditioned decoder follows ComfyUI: the latent is mixed
with 2.5 % noise and decoded at timestep 0.05. The noise (there and in the
blocks) comes from a generator seeded per decode, so a latent always decodes
to the same video; ComfyUI draws it unseeded.

Latents are normalised with the file's per-channel statistics
(``per_channel_statistics.mean-of-means`` / ``std-of-means``) out of the
encoder and back into the decoder. Module names are the released files'
(``encoder.down_blocks.N`` and ``decoder.up_blocks.N`` flat lists, the
decoder's ``last_time_embedder`` / ``last_scale_shift_table``); widths, depths
and strides are read from the tensor shapes, so reduced-width files build the
same network shape. Spatial padding is zeros unless the file's ``config``
metadata names another mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.detection import Shapes
from ...model.quant import network_weights
from ...model.vae import VAE, VAEModel
from ..flux.layers import timestep_embedding
from ..ltx2.vae import Statistics, from_depth, patchify, pixel_norm, to_depth, unpatchify

#: space-to-depth / depth-to-space strides by their volume: time only, space only, both
STRIDES = {2: (2, 1, 1), 4: (1, 2, 2), 8: (2, 2, 2)}
#: per-channel statistics the released files carry besides the two the VAE uses
UNUSED_STATISTICS = ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")
#: ComfyUI's decode: the timestep the decoder is conditioned on and the share of noise mixed into the latent
DECODE_TIMESTEP, DECODE_NOISE = 0.05, 0.025
PATCH = 4


@dataclass(frozen=True)
class Block:
    """One entry of a stage list, from ``width`` to ``out`` channels.

    ``res``: ``layers`` residual blocks (with spatial ``noise`` / a ``timestep`` embedding in 0.9.1+
    decoders); ``res_change``: one residual block changing the width; ``down_conv``: a strided
    convolution; ``down`` / ``up``: space-to-depth / depth-to-space by ``stride`` (``residual``: the
    upsampler's repeated-channel shortcut).
    """

    kind: str
    width: int
    out: int
    layers: int = 0
    stride: tuple[int, int, int] = (1, 1, 1)
    noise: bool = False
    timestep: bool = False
    residual: bool = False


@dataclass(frozen=True)
class Layout:
    latent: int
    encoder_in: int
    encoder: tuple[Block, ...]
    decoder_in: int
    decoder: tuple[Block, ...]
    timestep: bool
    padding: str = "zeros"


class CausalConv3d(nn.Module):
    """A 3-d convolution padded in time by repeating the first frame (causal) or both end frames."""

    def __init__(self, ops: Any, cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: str = "zeros") -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = ops.Conv3d(cin, cout, kernel, stride=stride, padding=(0, kernel // 2, kernel // 2),
                               padding_mode=padding)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        if self.kernel > 1:
            if causal:
                x = torch.cat([x[:, :, :1].expand(-1, -1, self.kernel - 1, -1, -1), x], dim=2)
            else:
                half = (self.kernel - 1) // 2
                x = torch.cat([x[:, :, :1].expand(-1, -1, half, -1, -1), x,
                               x[:, :, -1:].expand(-1, -1, half, -1, -1)], dim=2)
        return self.conv(x)


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channels of [B, C, T, H, W]."""

    def __init__(self, ops: Any, dim: int) -> None:
        super().__init__()
        self.norm = ops.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def spatial_noise(x: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One noise image [H, W] for all channels and frames, scaled per channel (drawn on the CPU)."""
    noise = torch.randn(x.shape[-2:], generator=generator).to(device=x.device, dtype=x.dtype)
    return x + (noise[None] * scale.to(x))[None, :, None]


class ResBlock(nn.Module):
    def __init__(self, ops: Any, cin: int, cout: int, padding: str, noise: bool = False,
                 timestep: bool = False) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(ops, cin, cout, padding=padding)
        self.conv2 = CausalConv3d(ops, cout, cout, padding=padding)
        if noise:
            self.per_channel_scale1 = nn.Parameter(torch.empty(cin, 1, 1))
            self.per_channel_scale2 = nn.Parameter(torch.empty(cin, 1, 1))
        if cin != cout:
            self.norm3 = ChannelLayerNorm(ops, cin)
            self.conv_shortcut = ops.Conv3d(cin, cout, 1)
        if timestep:
            self.scale_shift_table = nn.Parameter(torch.empty(4, cin))
        self.noise, self.timestep, self.change = noise, timestep, cin != cout

    def forward(self, x: torch.Tensor, causal: bool, emb: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        h = pixel_norm(x)
        if self.timestep:
            table = _ops.cast_weight(self, "scale_shift_table", h)
            values = table[None, :, :, None, None, None] + emb.reshape(x.shape[0], 4, -1, 1, 1, 1)
            shift1, scale1, shift2, scale2 = values.unbind(dim=1)
            h = h * (1 + scale1) + shift1
        h = self.conv1(F.silu(h), causal)
        if self.noise:
            h = spatial_noise(h, self.per_channel_scale1, generator)
        h = pixel_norm(h)
        if self.timestep:
            h = h * (1 + scale2) + shift2
        h = self.conv2(F.silu(h), causal)
        if self.noise:
            h = spatial_noise(h, self.per_channel_scale2, generator)
        if self.change:
            x = self.conv_shortcut(self.norm3(x))
        return x + h


class TimestepEmbedder(nn.Module):
    def __init__(self, ops: Any, dim: int) -> None:
        super().__init__()
        self.linear_1 = ops.Linear(256, dim)
        self.linear_2 = ops.Linear(dim, dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(timestep_embedding(t.float(), 256, time_factor=1.0).to(dtype))))


class TimeEmbedding(nn.Module):
    """A timestep [B] -> [B, dim] (the sinusoid through two linear layers)."""

    def __init__(self, ops: Any, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(ops, dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.timestep_embedder(t, dtype)


class ResStage(nn.Module):
    """Residual blocks at one width; in timestep-conditioned decoders, their own embedding of the timestep."""

    def __init__(self, ops: Any, block: Block, padding: str) -> None:
        super().__init__()
        if block.timestep:
            self.time_embedder = TimeEmbedding(ops, 4 * block.width)
        self.res_blocks = nn.ModuleList(ResBlock(ops, block.width, block.width, padding, block.noise, block.timestep)
                                        for _ in range(block.layers))
        self.timestep = block.timestep

    def forward(self, x: torch.Tensor, causal: bool, timestep: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        emb = self.time_embedder(timestep, x.dtype) if self.timestep else None
        for block in self.res_blocks:
            x = block(x, causal, emb, generator)
        return x


class Downsample(nn.Module):
    """Space-to-depth by ``stride``; the shortcut averages groups of the folded input channels."""

    def __init__(self, ops: Any, block: Block, padding: str) -> None:
        super().__init__()
        volume = math.prod(block.stride)
        self.conv = CausalConv3d(ops, block.width, block.out // volume, padding=padding)
        self.stride = block.stride
        self.group = block.width * volume // block.out

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        if self.stride[0] == 2:  # an odd frame count made even: the first frame doubled
            x = torch.cat([x[:, :, :1], x], dim=2)
        skip = to_depth(x, self.stride)
        b, c, t, h, w = skip.shape
        skip = skip.view(b, c // self.group, self.group, t, h, w).mean(dim=2)
        return to_depth(self.conv(x, causal), self.stride) + skip


class Upsample(nn.Module):
    """Depth-to-space by ``stride`` to ``out`` channels; ``residual`` adds the unfolded input, its channels
    repeated. A temporal doubling makes one frame before the first, which is dropped."""

    def __init__(self, ops: Any, block: Block, padding: str) -> None:
        super().__init__()
        volume = math.prod(block.stride)
        self.conv = CausalConv3d(ops, block.width, block.out * volume, padding=padding)
        self.stride = block.stride
        self.repeats = volume * block.out // block.width if block.residual else 0

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        drop = self.stride[0] - 1
        y = from_depth(self.conv(x, causal), self.stride)[:, :, drop:]
        if self.repeats:
            y = y + from_depth(x, self.stride).repeat(1, self.repeats, 1, 1, 1)[:, :, drop:]
        return y


def _stages(ops: Any, blocks: tuple[Block, ...], padding: str) -> nn.ModuleList:
    out = nn.ModuleList()
    for block in blocks:
        if block.kind == "res":
            out.append(ResStage(ops, block, padding))
        elif block.kind == "res_change":
            out.append(ResBlock(ops, block.width, block.out, padding))
        elif block.kind == "down_conv":
            out.append(CausalConv3d(ops, block.width, block.out, stride=2, padding=padding))
        elif block.kind == "down":
            out.append(Downsample(ops, block, padding))
        else:
            out.append(Upsample(ops, block, padding))
    return out


class Encoder(nn.Module):
    def __init__(self, ops: Any, layout: Layout) -> None:
        super().__init__()
        self.latent = layout.latent
        self.conv_in = CausalConv3d(ops, 3 * PATCH * PATCH, layout.encoder_in, padding=layout.padding)
        self.down_blocks = _stages(ops, layout.encoder, layout.padding)
        self.conv_out = CausalConv3d(ops, layout.encoder[-1].out, layout.latent + 1, padding=layout.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip [B, 3, 1 + 8k, H, W] in [-1, 1] -> posterior mean [B, latent, 1 + k, H/32, W/32]."""
        h = self.conv_in(patchify(x, PATCH), True)
        for block in self.down_blocks:
            h = block(h, True)
        return self.conv_out(F.silu(pixel_norm(h)), True)[:, : self.latent]


class Decoder(nn.Module):
    def __init__(self, ops: Any, layout: Layout) -> None:
        super().__init__()
        self.conv_in = CausalConv3d(ops, layout.latent, layout.decoder_in, padding=layout.padding)
        self.up_blocks = _stages(ops, layout.decoder, layout.padding)
        last = layout.decoder[-1].out
        self.conv_out = CausalConv3d(ops, last, 3 * PATCH * PATCH, padding=layout.padding)
        self.timestep_conditioning = layout.timestep
        if layout.timestep:
            self.timestep_scale_multiplier = nn.Parameter(torch.empty(()))
            self.last_time_embedder = TimeEmbedding(ops, 2 * last)
            self.last_scale_shift_table = nn.Parameter(torch.empty(2, last))

    def forward(self, z: torch.Tensor, timestep: torch.Tensor | float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Latent [B, latent, 1 + k, h, w] -> clip [B, 3, 1 + 8k, 32h, 32w] (unclamped); ``timestep`` (0-1) for
        timestep-conditioned decoders, ``generator`` for their spatial noise."""
        b = z.shape[0]
        h = self.conv_in(z, False)
        scaled = None
        if self.timestep_conditioning:
            t = torch.as_tensor(DECODE_TIMESTEP if timestep is None else timestep, dtype=torch.float32)
            scaled = t.to(z.device).flatten().expand(b) * self.timestep_scale_multiplier.float()
        for block in self.up_blocks:
            if isinstance(block, ResStage):
                h = block(h, False, scaled, generator)
            else:
                h = block(h, False)
        h = pixel_norm(h)
        if self.timestep_conditioning:
            emb = self.last_time_embedder(scaled, h.dtype).reshape(b, 2, -1, 1, 1, 1)
            shift, scale = (_ops.cast_weight(self, "last_scale_shift_table", h)[None, :, :, None, None, None]
                            + emb).unbind(dim=1)
            h = h * (1 + scale) + shift
        return unpatchify(self.conv_out(F.silu(h), False), PATCH)


class LTXVVideoVAENet(nn.Module):
    def __init__(self, layout: Layout, ops: Any = _ops.plain) -> None:
        super().__init__()
        self.encoder = Encoder(ops, layout)
        self.decoder = Decoder(ops, layout)
        self.per_channel_statistics = Statistics(layout.latent)

    @property
    def dtype(self) -> torch.dtype:
        conv = self.decoder.conv_in.conv
        return getattr(conv, "compute_dtype", None) or conv.weight.dtype

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # frames of one clip
            x = x.movedim(0, 1).unsqueeze(0)
        if (x.shape[2] - 1) % 8:
            raise ValueError(f"the LTX-Video VAE encodes 1 + 8k frames (1, 9, 17, ...), not {x.shape[2]}")
        return self.per_channel_statistics.normalize(self.encoder(x.to(self.dtype)))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 4:
            z = z.unsqueeze(2)
        z = z.to(self.dtype)
        generator = None
        if self.decoder.timestep_conditioning:
            generator = torch.Generator().manual_seed(0)
            noise = torch.randn(z.shape, generator=generator).to(z)
            z = noise * DECODE_NOISE + (1.0 - DECODE_NOISE) * z
        return self.decoder(self.per_channel_statistics.un_normalize(z), DECODE_TIMESTEP, generator)


class LTXVVideoVAE(VAE):
    """Latents are 5-d [B, 128, T, H/32, W/32]; T latent frames decode to 1 + 8 (T - 1)."""

    #: pixel frames, rows and columns per latent cell (ComfyUI's names; nodes read them)
    downscale_index_formula = (8, 32, 32)
    upscale_index_formula = (8, 32, 32)

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent space's per-channel mean and standard deviation [1, C, 1, 1, 1] (float32, CPU): latents
        here are ``(raw - mean) / std`` (LTXVLatentUpsampler reads them)."""
        with self.patcher.use() as model:
            stats = model.loaded_module.per_channel_statistics
            return tuple(stats.get_buffer(name).float().cpu().view(1, -1, 1, 1, 1)
                         for name in ("mean-of-means", "std-of-means"))

    def temporal_compression_decode(self) -> int:
        return 8


def _read_blocks(shapes: Shapes, base: str, final: int) -> tuple[Block, ...]:
    """The stage list under ``base`` (``encoder.down_blocks.`` / ``decoder.up_blocks.``).

    A resampler's output width is the next block's input width (``final``, the output convolution's
    input, after the last); its stride follows from how many channels its convolution makes. Strided
    convolutions (0.9.0's ``compress_all``) halve time and space; upsamplers that narrow the stream
    carry the repeated-channel shortcut, as every released one does.
    """
    found: list[tuple[str, Any]] = []
    i = 0
    while True:
        stem = f"{base}{i}."
        if stem + "res_blocks.0.conv1.conv.weight" in shapes:
            layers = 0
            while f"{stem}res_blocks.{layers}.conv1.conv.weight" in shapes:
                layers += 1
            width = int(shapes[stem + "res_blocks.0.conv1.conv.weight"][0])
            found.append(("res", Block("res", width, width, layers=layers,
                                       noise=stem + "res_blocks.0.per_channel_scale1" in shapes,
                                       timestep=stem + "time_embedder.timestep_embedder.linear_1.weight" in shapes)))
        elif stem + "conv1.conv.weight" in shapes:
            out, cin = (int(d) for d in shapes[stem + "conv1.conv.weight"][:2])
            found.append(("res_change", Block("res_change", cin, out)))
        elif stem + "conv.conv.weight" in shapes:
            found.append(("resample", shapes[stem + "conv.conv.weight"]))
        elif stem + "conv.weight" in shapes:
            out, cin = (int(d) for d in shapes[stem + "conv.weight"][:2])
            found.append(("down_conv", Block("down_conv", cin, out, stride=(2, 2, 2))))
        else:
            break
        i += 1
    upsampling = base.endswith("up_blocks.")
    blocks: list[Block] = []
    for j, (kind, item) in enumerate(found):
        if kind != "resample":
            blocks.append(item)
            continue
        conv_out, cin = int(item[0]), int(item[1])
        out = next((b.width for k, b in found[j + 1:] if k != "resample"), final)
        if upsampling:
            blocks.append(Block("up", cin, out, stride=STRIDES[conv_out // out], residual=out < cin))
        else:
            blocks.append(Block("down", cin, out, stride=STRIDES[out // conv_out]))
    return tuple(blocks)


def layout(shapes: Shapes, prefix: str, padding: str = "zeros") -> Layout:
    """The network's shape from a file's tensors (the released layout under ``prefix``)."""
    latent = int(shapes[prefix + "decoder.conv_in.conv.weight"][1])
    def width(key: str) -> int:
        return int(shapes[prefix + key][1])

    encoder = _read_blocks(shapes, prefix + "encoder.down_blocks.", width("encoder.conv_out.conv.weight"))
    decoder = _read_blocks(shapes, prefix + "decoder.up_blocks.", width("decoder.conv_out.conv.weight"))
    return Layout(latent=latent, encoder_in=int(shapes[prefix + "encoder.conv_in.conv.weight"][0]), encoder=encoder,
                  decoder_in=int(shapes[prefix + "decoder.conv_in.conv.weight"][0]), decoder=decoder,
                  timestep=prefix + "decoder.last_scale_shift_table" in shapes, padding=padding)


def released_layout(version: str, encoder_width: int = 128, decoder_width: int = 128, latent: int = 128,
                    encoder_layers: tuple[int, ...] | None = None,
                    decoder_layers: tuple[int, ...] | None = None) -> Layout:
    """A released file's stage list ("0.9.0", "0.9.1" or "0.9.5"), at the given widths and depths (the real
    ones are the defaults; depths from the input side for the encoder, from the latent side for the decoder)."""
    w, d = encoder_width, decoder_width
    if version == "0.9.5":
        depths = encoder_layers or (4, 6, 6, 2, 2)
        strides = ((1, 2, 2), (2, 1, 1), (2, 2, 2), (2, 2, 2))
        encoder: list[Block] = []
        for i, layers in enumerate(depths):
            encoder.append(Block("res", w, w, layers=layers))
            if i < len(strides):
                encoder.append(Block("down", w, 2 * w, stride=strides[i]))
                w *= 2
    else:
        depths = encoder_layers or (4, 3, 3, 3, 4)
        encoder = [Block("res", w, w, layers=depths[0]), Block("down_conv", w, w, stride=(2, 2, 2)),
                   Block("res_change", w, 2 * w), Block("res", 2 * w, 2 * w, layers=depths[1]),
                   Block("down_conv", 2 * w, 2 * w, stride=(2, 2, 2)), Block("res_change", 2 * w, 4 * w),
                   Block("res", 4 * w, 4 * w, layers=depths[2]), Block("down_conv", 4 * w, 4 * w, stride=(2, 2, 2)),
                   Block("res", 4 * w, 4 * w, layers=depths[3]), Block("res", 4 * w, 4 * w, layers=depths[4])]
    if version == "0.9.0":
        depths = decoder_layers or (4, 3, 3, 3, 4)
        top = 4 * d
        decoder = [Block("res", top, top, layers=depths[0]), Block("res", top, top, layers=depths[1]),
                   Block("up", top, top, stride=(2, 2, 2)), Block("res", top, top, layers=depths[2]),
                   Block("res_change", top, 2 * d), Block("up", 2 * d, 2 * d, stride=(2, 2, 2)),
                   Block("res", 2 * d, 2 * d, layers=depths[3]), Block("res_change", 2 * d, d),
                   Block("up", d, d, stride=(2, 2, 2)), Block("res", d, d, layers=depths[4])]
        return Layout(latent=latent, encoder_in=encoder_width, encoder=tuple(encoder), decoder_in=top,
                      decoder=tuple(decoder), timestep=False)
    noise = version == "0.9.1"
    depths = decoder_layers or ((8, 7, 6, 5) if noise else (5, 5, 5, 5))
    top = width = 8 * d
    decoder = []
    for i, layers in enumerate(depths):
        decoder.append(Block("res", width, width, layers=layers, noise=noise and i > 0, timestep=True))
        if i < len(depths) - 1:
            decoder.append(Block("up", width, width // 2, stride=(2, 2, 2), residual=True))
            width //= 2
    return Layout(latent=latent, encoder_in=encoder_width, encoder=tuple(encoder), decoder_in=top,
                  decoder=tuple(decoder), timestep=True)


def module_key(key: str) -> str | None:
    """File key -> network key: statistics the VAE does not use are dropped."""
    if key.startswith("per_channel_statistics.") and key.split(".", 1)[1] in UNUSED_STATISTICS:
        return None
    return key


def ltxv_vae(path: str, prefix: str, shapes: Shapes) -> VAE:
    """VAELoader / CheckpointLoaderSimple: the LTX-Video 0.9 VAE under ``prefix``."""
    from .detect import file_config

    padding = file_config(path).get("vae", {}).get("spatial_padding_mode", "zeros")
    shape = replace(layout(shapes, prefix), padding=padding)
    weights = network_weights(path, prefix, shapes, "LTX-Video VAE", "vae",
                              lambda ops, compute: LTXVVideoVAENet(shape, ops), rename=module_key,
                              supported=(torch.bfloat16, torch.float32))
    return LTXVVideoVAE(first_stage_model=VAEModel(weights), latent_channels=shape.latent, downscale_ratio=32,
                        latent_dim=3)
