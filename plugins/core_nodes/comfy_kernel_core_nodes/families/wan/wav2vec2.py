"""wav2vec 2.0 as ComfyUI's audio encoders run it (AUDIO_ENCODER, ``AudioEncoderLoader``): speech features for S2V.

The waveform (channels averaged, 16 kHz) goes through seven strided 1-d
convolutions (320 samples per output frame, 50 frames a second), a
projection to the model width, a grouped convolution as relative position
embedding, and a transformer encoder. What the encoder gives, as ComfyUI's
``encode_audio`` does: ``encoded_audio`` (the last state), every hidden state
``encoded_audio_all_layers`` (the input of each block and the final normed
output: layers + 1 tensors [B, frames, width]) and ``audio_samples``.

Two layouts exist, as in ComfyUI: "large" (``wav2vec2_large_english``, the
file Wan S2V uses: a layer norm after every convolution, pre-norm blocks, a
final norm, the waveform normalised to zero mean and unit variance first) and
"base" (a group norm after the first convolution only, post-norm blocks,
no input normalisation). Widths, depth and the layout are read from the keys
(heads of 64); names follow Hugging Face's ``Wav2Vec2Model`` (a ``wav2vec2.``
prefix is dropped), with the position convolution's weight norm stored as
``weight_g`` / ``weight_v`` or as ``parametrizations.weight.original0/1``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.attention import optimized_attention
from .audio_encoder import AudioEncoder, UnsupportedAudioEncoder

#: (kernel, stride) of the feature extractor's convolutions
CONVOLUTIONS = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))
POSITION = "encoder.pos_conv_embed.conv."


@dataclass(frozen=True)
class Wav2Vec2Config:
    width: int = 1024
    layers: int = 24
    conv_dim: int = 512
    conv_bias: bool = True
    large: bool = True
    position_kernel: int = 128
    position_groups: int = 16
    ffn_dim: int = 4096

    @property
    def heads(self) -> int:
        return max(self.width // 64, 1)


class FeatureConv(nn.Module):
    def __init__(self, chan_in: int, chan_out: int, kernel: int, stride: int, bias: bool, norm: str | None,
                 ops: Any) -> None:
        super().__init__()
        self.conv = ops.Conv1d(chan_in, chan_out, kernel, stride=stride, bias=bias)
        self.norm = norm
        if norm == "layer":
            self.layer_norm = ops.LayerNorm(chan_out)
        elif norm == "group":
            self.layer_norm = ops.GroupNorm(chan_out, chan_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        elif self.norm == "group":
            x = self.layer_norm(x)
        return F.gelu(x)


class FeatureExtractor(nn.Module):
    """Waveform [B, samples] -> frames [B, frames, conv_dim]."""

    def __init__(self, c: Wav2Vec2Config, ops: Any) -> None:
        super().__init__()
        layers = []
        for i, (kernel, stride) in enumerate(CONVOLUTIONS):
            norm = "layer" if c.large else ("group" if i == 0 else None)
            bias = c.conv_bias or (c.large and i == 0)
            layers.append(FeatureConv(1 if i == 0 else c.conv_dim, c.conv_dim, kernel, stride, bias, norm, ops))
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x.transpose(1, 2)


class FeatureProjection(nn.Module):
    def __init__(self, c: Wav2Vec2Config, ops: Any) -> None:
        super().__init__()
        self.layer_norm = ops.LayerNorm(c.conv_dim)
        self.projection = ops.Linear(c.conv_dim, c.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.layer_norm(x))


class WeightNorm(nn.Module):
    """The two tensors of a weight-normed kernel: per-tap gains ``original0`` and directions ``original1``."""

    def __init__(self, width: int, groups: int, kernel: int) -> None:
        super().__init__()
        self.original0 = nn.Parameter(torch.empty(1, 1, kernel))
        self.original1 = nn.Parameter(torch.empty(width, width // groups, kernel))


class PositionConv(nn.Module):
    """Grouped convolution over time (weight-normed per kernel tap), its last output dropped, then GELU."""

    def __init__(self, c: Wav2Vec2Config) -> None:
        super().__init__()
        self.kernel, self.groups = c.position_kernel, c.position_groups
        self.parametrizations = nn.ModuleDict({"weight": WeightNorm(c.width, c.position_groups, c.position_kernel)})
        self.bias = nn.Parameter(torch.empty(c.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.parametrizations["weight"]
        gain = _ops.cast_weight(norm, "original0", x)
        direction = _ops.cast_weight(norm, "original1", x)
        weight = direction * (gain / direction.norm(dim=(0, 1), keepdim=True))
        out = F.conv1d(x.transpose(1, 2), weight, _ops.cast_weight(self, "bias", x), padding=self.kernel // 2,
                       groups=self.groups)
        if self.kernel % 2 == 0:
            out = out[..., :-1]
        return F.gelu(out).transpose(1, 2)


class PositionEmbedding(nn.Module):
    def __init__(self, c: Wav2Vec2Config) -> None:
        super().__init__()
        self.conv = PositionConv(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Attention(nn.Module):
    def __init__(self, c: Wav2Vec2Config, ops: Any) -> None:
        super().__init__()
        self.heads = c.heads
        self.q_proj = ops.Linear(c.width, c.width)
        self.k_proj = ops.Linear(c.width, c.width)
        self.v_proj = ops.Linear(c.width, c.width)
        self.out_proj = ops.Linear(c.width, c.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(optimized_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads))


class FeedForward(nn.Module):
    def __init__(self, c: Wav2Vec2Config, ops: Any) -> None:
        super().__init__()
        self.intermediate_dense = ops.Linear(c.width, c.ffn_dim)
        self.output_dense = ops.Linear(c.ffn_dim, c.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class EncoderLayer(nn.Module):
    """Pre-norm (large) or post-norm (base) attention and feed-forward block."""

    def __init__(self, c: Wav2Vec2Config, ops: Any) -> None:
        super().__init__()
        self.pre_norm = c.large
        self.attention = Attention(c, ops)
        self.layer_norm = ops.LayerNorm(c.width)
        self.feed_forward = FeedForward(c, ops)
        self.final_layer_norm = ops.LayerNorm(c.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attention(self.layer_norm(x))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nn.Module):
    def __init__(self, c: Wav2Vec2Config, ops: Any) -> None:
        super().__init__()
        self.pre_norm = c.large
        self.pos_conv_embed = PositionEmbedding(c)
        self.layers = nn.ModuleList([EncoderLayer(c, ops) for _ in range(c.layers)])
        self.layer_norm = ops.LayerNorm(c.width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        x = x + self.pos_conv_embed(x)
        if not self.pre_norm:
            x = self.layer_norm(x)
        states = []
        for layer in self.layers:
            states.append(x)
            x = layer(x)
        if self.pre_norm:
            x = self.layer_norm(x)
        states.append(x)
        return x, tuple(states)


class Wav2Vec2(nn.Module):
    """``forward(waveform [B, channels, samples] at 16 kHz)`` -> (last state, every hidden state)."""

    def __init__(self, config: Wav2Vec2Config, ops: Any = _ops.plain) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = FeatureExtractor(config, ops)
        self.feature_projection = FeatureProjection(config, ops)
        self.encoder = Encoder(config, ops)

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        x = waveform.mean(dim=1)
        if self.config.large:  # over the whole batch, unbiased variance, as ComfyUI normalises
            x = (x - x.mean()) / torch.sqrt(x.var() + 1e-7)
        return self.encoder(self.feature_projection(self.feature_extractor(x)))


def config_from_keys(shapes: dict[str, tuple[int, ...]]) -> Wav2Vec2Config | None:
    """The layout of a wav2vec2 state dict (names without the ``wav2vec2.`` prefix), or None."""
    if "encoder.layer_norm.bias" not in shapes or "feature_projection.projection.weight" not in shapes:
        return None
    width, conv_dim = shapes["feature_projection.projection.weight"]
    gain = shapes.get(POSITION + "weight_g", shapes.get(POSITION + "parametrizations.weight.original0"))
    direction = shapes.get(POSITION + "weight_v", shapes.get(POSITION + "parametrizations.weight.original1"))
    if gain is None or direction is None:
        return None
    layers = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
    return Wav2Vec2Config(width=int(width), layers=layers, conv_dim=int(conv_dim),
                          conv_bias="feature_extractor.conv_layers.1.conv.bias" in shapes,
                          large="feature_extractor.conv_layers.1.layer_norm.weight" in shapes,
                          position_kernel=int(direction[-1]), position_groups=int(width) // int(direction[1]),
                          ffn_dim=int(shapes["encoder.layers.0.feed_forward.intermediate_dense.weight"][0]))


def _file_name(key: str) -> str | None:
    """A file key as the network names it (None: not part of the network)."""
    key = key.removeprefix("wav2vec2.")
    if key == POSITION + "weight_g":
        return POSITION + "parametrizations.weight.original0"
    if key == POSITION + "weight_v":
        return POSITION + "parametrizations.weight.original1"
    return key


def load(path: str) -> AudioEncoder:
    """A wav2vec2 file (bare keys or under ``wav2vec2.``) as AUDIO_ENCODER."""
    from ...model.files import tensor_shapes
    from .audio_encoder import network_encoder

    keys = tensor_shapes(path)
    shapes = {name: shape for key, shape in keys.items() if (name := _file_name(key)) is not None}
    config = config_from_keys(shapes)
    if config is None:
        raise UnsupportedAudioEncoder(f"{os.path.basename(path)}: not a wav2vec2 encoder")
    prefix = "wav2vec2." if any(k.startswith("wav2vec2.") for k in keys) else ""
    return network_encoder(path, prefix, config, Wav2Vec2, shapes, _file_name, "wav2vec2", "wav2vec2 audio encoder")
