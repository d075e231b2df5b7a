"""The LTX-2 video VAE: 128 latent channels, 32x spatial and 8x temporal compression, pixel-norm residual stages.

Pixels are first folded 4x4 into channels (48 = 3 x 4 x 4). The encoder runs
causal 3-d convolutions (the first frame replicated in front, zero padding in
space) through residual stages and space-to-depth downsamplers whose shortcut
averages channel groups; the decoder runs non-causal convolutions (first and
last frames replicated, reflect padding in space) through residual stages and
depth-to-space upsamplers with a repeated-channel shortcut, dropping the
extra leading frame each temporal doubling creates. LTX-2.3's decoder pads
with zeros, has no shortcuts and ends on a temporal then a spatial upsampler;
the file's ``config`` metadata says which (:func:`with_config`). A clip of 1 + 8k frames
becomes 1 + k latent frames. Norms are parameter-free RMS norms over channels.

Latents are normalised with the file's per-channel statistics
(``per_channel_statistics.mean-of-means`` / ``std-of-means``) on the way out
of the encoder and back on the way into the decoder, as ComfyUI's VAE does.

Module names are ComfyUI's released layout (``encoder.down_blocks.N`` a flat
list of residual stages and downsamplers, ``res_blocks.M.conv1.conv``,
``decoder.up_blocks.N``); the stage list, widths and strides are read from the
file's tensor shapes, so reduced-width files build the same network shape.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.detection import Shapes
from ...model.quant import network_weights
from ...model.vae import VAE, VAEModel

#: space-to-depth / depth-to-space strides by their volume: time only, space only, both
STRIDES = {2: (2, 1, 1), 4: (1, 2, 2), 8: (2, 2, 2)}
#: per-channel statistics a file may carry besides the two the VAE uses
UNUSED_STATISTICS = ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")


@dataclass(frozen=True)
class Stage:
    """One entry of a stage list: residual blocks (``layers`` at ``width``) or a resampler (``width`` to ``out``)."""

    kind: str
    width: int
    layers: int = 0
    stride: tuple[int, int, int] = (1, 1, 1)
    out: int = 0
    #: an upsampler's repeated-channel shortcut (LTX-2's; LTX-2.3's upsamplers have none)
    residual: bool = True


@dataclass(frozen=True)
class Layout:
    patch: int
    latent: int
    encoder: tuple[Stage, ...]
    decoder: tuple[Stage, ...]
    encoder_in: int
    decoder_in: int
    #: the decoder's spatial padding: LTX-2 reflects, LTX-2.3 pads with zeros (the encoder always with zeros)
    decoder_padding: str = "reflect"


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + eps)


class CausalConv3d(nn.Module):
    """3x3x3 convolution; time padded by replicating the first (and, non-causal, the last) frame."""

    def __init__(self, ops: Any, cin: int, cout: int, spatial_mode: str) -> None:
        super().__init__()
        self.conv = ops.Conv3d(cin, cout, 3)
        self.spatial_mode = spatial_mode

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        front = x[:, :, :1].expand(-1, -1, 2 if causal else 1, -1, -1)
        parts = [front, x] if causal else [front, x, x[:, :, -1:]]
        x = torch.cat(parts, dim=2)
        x = F.pad(x, (1, 1, 1, 1, 0, 0), mode=self.spatial_mode) if self.spatial_mode != "zeros" \
            else F.pad(x, (1, 1, 1, 1, 0, 0))
        return self.conv(x)


class ResBlock(nn.Module):
    def __init__(self, ops: Any, dim: int, spatial_mode: str) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(ops, dim, dim, spatial_mode)
        self.conv2 = CausalConv3d(ops, dim, dim, spatial_mode)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        h = self.conv1(F.silu(pixel_norm(x)), causal)
        return x + self.conv2(F.silu(pixel_norm(h)), causal)


class ResStage(nn.Module):
    def __init__(self, ops: Any, dim: int, layers: int, spatial_mode: str) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(ResBlock(ops, dim, spatial_mode) for _ in range(layers))

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        for block in self.res_blocks:
            x = block(x, causal)
        return x


def to_depth(x: torch.Tensor, stride: tuple[int, int, int]) -> torch.Tensor:
    """[B, C, t*T, h*H, w*W] -> [B, C*t*h*w, T, H, W], the offsets inside each channel."""
    b, c, t, h, w = x.shape
    st, sh, sw = stride
    x = x.reshape(b, c, t // st, st, h // sh, sh, w // sw, sw).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * st * sh * sw, t // st, h // sh, w // sw)


def from_depth(x: torch.Tensor, stride: tuple[int, int, int]) -> torch.Tensor:
    """The inverse of :func:`to_depth`."""
    b, c, t, h, w = x.shape
    st, sh, sw = stride
    n = st * sh * sw
    x = x.reshape(b, c // n, st, sh, sw, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c // n, t * st, h * sh, w * sw)


class Downsample(nn.Module):
    """Space-to-depth by ``stride``; the shortcut averages groups of the folded input channels."""

    def __init__(self, ops: Any, cin: int, cout: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        volume = stride[0] * stride[1] * stride[2]
        self.conv = CausalConv3d(ops, cin, cout // volume, "zeros")
        self.stride = stride
        self.group = cin * volume // cout

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        if self.stride[0] == 2:  # an even frame count: the first frame doubled
            x = torch.cat([x[:, :, :1], x], dim=2)
        skip = to_depth(x, self.stride)
        b, c, t, h, w = skip.shape
        skip = skip.view(b, c // self.group, self.group, t, h, w).mean(dim=2)
        return to_depth(self.conv(x, causal), self.stride) + skip


class Upsample(nn.Module):
    """Depth-to-space by ``stride`` with ``cin / cout`` fewer channels; the shortcut, where there is one,
    repeats the unfolded input."""

    def __init__(self, ops: Any, cin: int, cout: int, stride: tuple[int, int, int], spatial_mode: str,
                 residual: bool = True) -> None:
        super().__init__()
        volume = stride[0] * stride[1] * stride[2]
        self.conv = CausalConv3d(ops, cin, cout * volume, spatial_mode)
        self.stride = stride
        self.repeats = volume * cout // cin
        self.residual = residual

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        y = from_depth(self.conv(x, causal), self.stride)
        drop = self.stride[0] - 1  # a temporal doubling makes one frame before the first
        if not self.residual:
            return y[:, :, drop:]
        skip = from_depth(x, self.stride).repeat(1, self.repeats, 1, 1, 1)
        return y[:, :, drop:] + skip[:, :, drop:]


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, T, p*H, p*W] -> [B, C*p*p, T, H, W]; channel order (c, column offset, row offset)."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    b, c, t, h, w = x.shape
    x = x.reshape(b, c // (p * p), p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, c // (p * p), t, h * p, w * p)


def _stages(ops: Any, stages: tuple[Stage, ...], upsampling: bool, mode: str = "zeros") -> nn.ModuleList:
    """The encoder's (downsampling) or the decoder's (upsampling) stage list, padded in space by ``mode``."""
    out = nn.ModuleList()
    for s in stages:
        if s.kind == "res":
            out.append(ResStage(ops, s.width, s.layers, mode))
        elif upsampling:
            out.append(Upsample(ops, s.width, s.out, s.stride, mode, s.residual))
        else:
            out.append(Downsample(ops, s.width, s.out, s.stride))
    return out


class Encoder(nn.Module):
    def __init__(self, ops: Any, layout: Layout) -> None:
        super().__init__()
        self.patch, self.latent = layout.patch, layout.latent
        self.conv_in = CausalConv3d(ops, 3 * layout.patch ** 2, layout.encoder_in, "zeros")
        self.down_blocks = _stages(ops, layout.encoder, upsampling=False)
        last = layout.encoder[-1]
        self.conv_out = CausalConv3d(ops, last.out or last.width, layout.latent + 1, "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip [B, 3, 1 + 8k, H, W] in [-1, 1] -> posterior mean [B, latent, 1 + k, H/32, W/32]."""
        h = self.conv_in(patchify(x, self.patch), True)
        for block in self.down_blocks:
            h = block(h, True)
        return self.conv_out(F.silu(pixel_norm(h)), True)[:, : self.latent]


class Decoder(nn.Module):
    def __init__(self, ops: Any, layout: Layout) -> None:
        super().__init__()
        self.patch = layout.patch
        mode = layout.decoder_padding
        self.conv_in = CausalConv3d(ops, layout.latent, layout.decoder_in, mode)
        self.up_blocks = _stages(ops, layout.decoder, upsampling=True, mode=mode)
        last = layout.decoder[-1]
        self.conv_out = CausalConv3d(ops, last.out or last.width, 3 * layout.patch ** 2, mode)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent [B, latent, 1 + k, h, w] -> clip [B, 3, 1 + 8k, 32h, 32w] (unclamped)."""
        h = self.conv_in(z, False)
        for block in self.up_blocks:
            h = block(h, False)
        return unpatchify(self.conv_out(F.silu(pixel_norm(h)), False), self.patch)


class Statistics(nn.Module):
    """``per_channel_statistics``: the latent space's per-channel mean and standard deviation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean-of-means", torch.empty(channels))
        self.register_buffer("std-of-means", torch.empty(channels))

    def _view(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.get_buffer(name).view(1, -1, 1, 1, 1).to(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._view("mean-of-means", x)) / self._view("std-of-means", x)

    def un_normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._view("std-of-means", x) + self._view("mean-of-means", x)


class LTX2VideoVAENet(nn.Module):
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
            raise ValueError(f"the LTX-2 VAE encodes 1 + 8k frames (1, 9, 17, ...), not {x.shape[2]}")
        return self.per_channel_statistics.normalize(self.encoder(x.to(self.dtype)))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 4:
            z = z.unsqueeze(2)
        return self.decoder(self.per_channel_statistics.un_normalize(z.to(self.dtype)))


class LTX2VideoVAE(VAE):
    """Latents are 5-d [B, 128, T, H/32, W/32]; T latent frames decode to 1 + 8 (T - 1)."""

    #: pixel frames, rows and columns per latent cell (ComfyUI's names; nodes read them)
    downscale_index_formula = (8, 32, 32)
    upscale_index_formula = (8, 32, 32)

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent space's per-channel mean and standard deviation [1, C, 1, 1, 1] (float32, CPU): latents
        here are ``(raw - mean) / std``."""
        with self.patcher.use() as model:
            stats = model.loaded_module.per_channel_statistics
            return tuple(stats.get_buffer(name).float().cpu().view(1, -1, 1, 1, 1)
                         for name in ("mean-of-means", "std-of-means"))

    def temporal_compression_decode(self) -> int:
        return 8


def _width(shapes: Shapes, key: str, dim: int) -> int:
    return int(shapes[key][dim])


def _read_stages(shapes: Shapes, base: str, width: int, final: int, upsampling: bool) -> tuple[Stage, ...]:
    """The stage list under ``base`` (``encoder.down_blocks.`` / ``decoder.up_blocks.``) from ``width`` channels.

    A resampler's output width is the next residual stage's width (``final``, the output convolution's
    input, after the last); its stride follows from how many channels its convolution makes.
    """
    kinds: list[tuple[str, int]] = []
    i = 0
    while True:
        stem = f"{base}{i}."
        if stem + "res_blocks.0.conv1.conv.weight" in shapes:
            layers = 0
            while f"{stem}res_blocks.{layers}.conv1.conv.weight" in shapes:
                layers += 1
            kinds.append(("res", layers))
        elif stem + "conv.conv.weight" in shapes:
            kinds.append(("resample", 0))
        else:
            break
        i += 1
    widths = [_width(shapes, f"{base}{j}.res_blocks.0.conv1.conv.weight", 0) if kind == "res" else None
              for j, (kind, _) in enumerate(kinds)]
    stages: list[Stage] = []
    for j, (kind, layers) in enumerate(kinds):
        if kind == "res":
            width = widths[j]
            stages.append(Stage("res", width, layers=layers))
            continue
        out = next((w for w in widths[j + 1:] if w is not None), final)
        conv = _width(shapes, f"{base}{j}.conv.conv.weight", 0)
        volume = conv // out if upsampling else out // conv
        stages.append(Stage("resample", width, stride=STRIDES[volume], out=out))
        width = out
    return tuple(stages)


def layout(shapes: Shapes, prefix: str) -> Layout:
    """The network's shape from a file's tensors (ComfyUI's layout under ``prefix``)."""
    conv_in = shapes[prefix + "encoder.conv_in.conv.weight"]
    patch = int(round((int(conv_in[1]) / 3) ** 0.5))
    latent = int(shapes[prefix + "decoder.conv_in.conv.weight"][1])
    encoder = _read_stages(shapes, prefix + "encoder.down_blocks.", int(conv_in[0]),
                           _width(shapes, prefix + "encoder.conv_out.conv.weight", 1), False)
    decoder_in = int(shapes[prefix + "decoder.conv_in.conv.weight"][0])
    decoder = _read_stages(shapes, prefix + "decoder.up_blocks.", decoder_in,
                           _width(shapes, prefix + "decoder.conv_out.conv.weight", 1), True)
    return Layout(patch=patch, latent=latent, encoder=encoder, decoder=decoder, encoder_in=int(conv_in[0]),
                  decoder_in=decoder_in)


def with_config(shape: Layout, vae_config: dict[str, Any] | None) -> Layout:
    """Apply what only the file's ``config`` metadata (its ``vae`` section) tells: the decoder's padding and
    which upsamplers have a shortcut. Without a section the file is taken for LTX-2's (reflect, shortcuts).

    ``decoder_blocks`` lists the stages in the encoder's order, as ComfyUI reads them; an upsampler
    (``compress_time`` / ``_space`` / ``_all``) has a shortcut when its parameters say ``residual``.
    """
    if not vae_config:
        return shape
    padding = str(vae_config.get("decoder_spatial_padding_mode", vae_config.get("spatial_padding_mode", "reflect")))
    blocks = vae_config.get("decoder_blocks") or vae_config.get("blocks") or []
    residual = [bool(params.get("residual", False)) if isinstance(params, dict) else False
                for name, params in reversed(blocks) if str(name).startswith("compress_")]
    decoder = list(shape.decoder)
    resamplers = [i for i, s in enumerate(decoder) if s.kind == "resample"]
    if len(residual) == len(resamplers):
        for i, flag in zip(resamplers, residual, strict=True):
            decoder[i] = replace(decoder[i], residual=flag)
    return replace(shape, decoder=tuple(decoder), decoder_padding=padding)


def guessed_config(shape: Layout) -> dict[str, Any] | None:
    """The ``vae`` section a file without metadata most likely had: LTX-2.3's when its decoder upsamples time
    alone somewhere (LTX-2's upsample space and time together throughout), else none (LTX-2's settings)."""
    if not any(s.kind == "resample" and s.stride == (2, 1, 1) for s in shape.decoder):
        return None
    plain = replace(shape, decoder=tuple(replace(s, residual=False) for s in shape.decoder))
    return {"decoder_spatial_padding_mode": "zeros", "decoder_blocks": config_23_decoder_blocks(plain)}


def module_key(key: str) -> str | None:
    """File key -> network key: statistics the VAE does not use are dropped."""
    if key.startswith("per_channel_statistics.") and key.split(".", 1)[1] in UNUSED_STATISTICS:
        return None
    return key


def ltx2_video_vae(path: str, prefix: str, shapes: Shapes) -> VAE:
    from .audio_vae import file_config

    shape = layout(shapes, prefix)
    shape = with_config(shape, file_config(path).get("vae") or guessed_config(shape))
    weights = network_weights(path, prefix, shapes, "LTX-2 video VAE", "vae",
                              lambda ops, compute: LTX2VideoVAENet(shape, ops), rename=module_key,
                              supported=(torch.bfloat16, torch.float32))
    return LTX2VideoVAE(first_stage_model=VAEModel(weights), latent_channels=shape.latent, downscale_ratio=32,
                        latent_dim=3)


def released_layout(encoder_width: int = 128, decoder_width: int = 128, latent: int = 128,
                    encoder_layers: tuple[int, ...] = (4, 6, 6, 2, 2),
                    decoder_layers: tuple[int, ...] = (5, 5, 5, 5)) -> Layout:
    """The released files' stage list (widths and depths as given; the real ones are the defaults).

    Encoder: residual stages between a spatial, a temporal and two space-time downsamplers, each
    doubling the width; decoder: residual stages between three space-time upsamplers halving it.
    """
    strides = ((1, 2, 2), (2, 1, 1), (2, 2, 2), (2, 2, 2))
    encoder: list[Stage] = []
    width = encoder_width
    for i, layers in enumerate(encoder_layers):
        encoder.append(Stage("res", width, layers=layers))
        if i < len(strides):
            encoder.append(Stage("resample", width, stride=strides[i], out=2 * width))
            width *= 2
    decoder: list[Stage] = []
    width = decoder_width * 2 ** (len(decoder_layers) - 1)
    top = width
    for i, layers in enumerate(decoder_layers):
        decoder.append(Stage("res", width, layers=layers))
        if i < len(decoder_layers) - 1:
            decoder.append(Stage("resample", width, stride=(2, 2, 2), out=width // 2))
            width //= 2
    return Layout(patch=4, latent=latent, encoder=tuple(encoder), decoder=tuple(decoder),
                  encoder_in=encoder_width, decoder_in=top)


def released_layout_23(width: int = 128, latent: int = 128, encoder_layers: tuple[int, ...] = (4, 6, 4, 2, 2),
                       decoder_layers: tuple[int, ...] = (2, 2, 4, 6, 4)) -> Layout:
    """LTX-2.3's stage list (widths scaled by ``width``; the released ones are the defaults).

    Encoder as LTX-2's, but its last downsampler keeps the width (8 x ``width`` at the bottom). Decoder:
    spatio-temporal upsamplers halving the width, then keeping it, then a temporal and a spatial one
    halving it, none with a shortcut, padded with zeros (what the file's ``config`` says; see
    :func:`with_config`).
    """
    strides = ((1, 2, 2), (2, 1, 1), (2, 2, 2), (2, 2, 2))
    widths = (width, 2 * width, 4 * width, 8 * width, 8 * width)
    encoder: list[Stage] = []
    for i, layers in enumerate(encoder_layers):
        encoder.append(Stage("res", widths[i], layers=layers))
        if i < len(strides):
            encoder.append(Stage("resample", widths[i], stride=strides[i], out=widths[i + 1]))
    steps = (((2, 2, 2), 4 * width), ((2, 2, 2), 4 * width), ((2, 1, 1), 2 * width), ((1, 2, 2), width))
    decoder: list[Stage] = []
    current = 8 * width
    for i, layers in enumerate(decoder_layers):
        decoder.append(Stage("res", current, layers=layers))
        if i < len(steps):
            stride, out = steps[i]
            decoder.append(Stage("resample", current, stride=stride, out=out, residual=False))
            current = out
    return Layout(patch=4, latent=latent, encoder=tuple(encoder), decoder=tuple(decoder), encoder_in=width,
                  decoder_in=8 * width, decoder_padding="zeros")


def config_23_decoder_blocks(shape: Layout) -> list[list[Any]]:
    """``decoder_blocks`` as an LTX-2.3 file's ``config`` lists them for ``shape`` (the encoder's order)."""
    names = {(2, 2, 2): "compress_all", (2, 1, 1): "compress_time", (1, 2, 2): "compress_space"}
    blocks: list[list[Any]] = []
    for s in shape.decoder:
        if s.kind == "res":
            blocks.append(["res_x", {"num_layers": s.layers}])
        else:
            blocks.append([names[s.stride], {"multiplier": s.width // s.out, "residual": s.residual}])
    return blocks[::-1]
