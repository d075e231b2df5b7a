"""Wan 2.2 Animate: the Wan I2V transformer driven by a pose video and a face video.

Besides the text, CLIP vision tokens and the I2V channels (the reference
image and the frames to keep), Animate 14B takes

- ``pose_latents`` [B, 16, F, h, w]: the pose video's latents. A patch
  embedding of their own (``pose_patch_embedding``) is added to the video's
  patch embeddings from the second latent frame on (the first is the
  reference image's);
- ``face_pixel_values`` [B, 3, T, 512, 512]: the face crops in -1..1. Each
  crop goes through a StyleGAN-like encoder (``motion_encoder``: seven
  down-sampling residual blocks to a 512-wide code, five linear layers to 20
  motion weights, which mix 20 orthonormal directions back to 512), then
  ``face_encoder`` (causal 1-d convolutions, two of stride 2, so four face
  frames per latent frame) makes four tokens per latent frame and adds a
  learned fifth. The first latent frame gets all-zero tokens; frames past
  the face video get zeros too.

After blocks 0, 5, 10, ... a ``face_adapter`` block lets each latent frame's
video tokens attend to that frame's five face tokens (RMS-normed queries
and keys per head) and adds the result.

Sizes inside the two face encoders are fixed by the released model (512,
20, 1024 wide, four heads), as in ComfyUI; the adapter follows the model's
width and head count. The stored blur filters of the motion encoder
(``...kernel``, the fixed [1, 3, 3, 1] filter) are not read: they are
rebuilt here. Names follow the released weights as ComfyUI loads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.attention import optimized_attention
from .transformer import WanConfig, WanTransformer, pad_to_patches, unpatchify

#: the motion code width, the number of motion directions, the face encoder's width and heads (fixed sizes)
STYLE_DIM, MOTION_DIM, FACE_WIDTH, FACE_HEADS = 512, 20, 1024, 4
#: the motion encoder's channels: a 1x1 convolution to the first, then one residual block per step
ENCODER_CHANNELS = (32, 64, 128, 256, 512, 512, 512, 512)
#: face crops encoded at once
FACE_CHUNK = 8


@dataclass(frozen=True)
class AnimateConfig(WanConfig):
    """The Wan I2V layout (CLIP vision tokens, 36 input channels); a face adapter block every fifth block."""

    model_type: str = "animate"
    in_dim: int = 36
    image_embedding: bool = True

    @property
    def face_layers(self) -> int:
        return self.num_layers // 5


def animate_layout(base: WanConfig) -> AnimateConfig:
    """The Animate layout of a detected Wan layout (always with the CLIP vision projection)."""
    fields = {name: getattr(base, name) for name in WanConfig.__dataclass_fields__}
    return AnimateConfig(**dict(fields, model_type="animate", image_embedding=True))


def _blur_kernel(like: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], device=like.device, dtype=like.dtype)
    k = torch.outer(k, k)
    return k / k.sum()


class Blur(nn.Module):
    """The fixed 4x4 low-pass filter before each stride-2 convolution, per channel, after padding."""

    def __init__(self, pad: tuple[int, int]) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.pad
        kernel = _blur_kernel(x).expand(x.shape[1], 1, 4, 4)
        return F.conv2d(F.pad(x, (a, b, a, b)), kernel, groups=x.shape[1])


class EqualConv2d(nn.Module):
    """A convolution whose stored weight is scaled by 1 / sqrt(fan-in) when applied (StyleGAN's equalised rate)."""

    def __init__(self, cin: int, cout: int, size: int, stride: int = 1, padding: int = 0, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, size, size))
        self.bias = nn.Parameter(torch.empty(cout)) if bias else None
        self.scale, self.stride, self.padding = 1 / math.sqrt(cin * size * size), stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, _ops.cast_weight(self, "weight", x) * self.scale, _ops.cast_weight(self, "bias", x),
                        stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """A linear layer with the equalised-rate weight scale (no activation in this model)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin))
        self.bias = nn.Parameter(torch.empty(cout))
        self.scale = 1 / math.sqrt(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _ops.cast_weight(self, "weight", x) * self.scale, _ops.cast_weight(self, "bias", x))


class BiasedLeakyReLU(nn.Module):
    """leaky_relu(x + bias, 0.2) * sqrt(2) (the bias is stored [1, C, 1, 1])."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.empty(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + _ops.cast_weight(self, "bias", x), 0.2) * math.sqrt(2)


def conv_layer(cin: int, cout: int, size: int, downsample: bool = False, activate: bool = True) -> nn.Sequential:
    """[blur,] convolution[, biased leaky ReLU]: the numbered layers of the released ``ConvLayer`` (the
    convolutions have no bias of their own)."""
    layers: list[nn.Module] = []
    if downsample:
        p = 2 + size - 1
        layers.append(Blur(((p + 1) // 2, p // 2)))
        layers.append(EqualConv2d(cin, cout, size, stride=2, bias=False))
    else:
        layers.append(EqualConv2d(cin, cout, size, padding=size // 2, bias=False))
    if activate:
        layers.append(BiasedLeakyReLU(cout))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = conv_layer(cin, cin, 3)
        self.conv2 = conv_layer(cin, cout, 3, downsample=True)
        self.skip = conv_layer(cin, cout, 1, downsample=True, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class AppearanceEncoder(nn.Module):
    """512x512 crops [N, 3, 512, 512] -> codes [N, 512] (seven halvings, then a 4x4 convolution)."""

    def __init__(self) -> None:
        super().__init__()
        c = ENCODER_CHANNELS
        self.convs = nn.ModuleList([conv_layer(3, c[0], 1), *(ResBlock(a, b) for a, b in zip(c, c[1:], strict=False)),
                                    EqualConv2d(c[-1], STYLE_DIM, 4, bias=False)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return x.flatten(1)


class MotionCode(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net_app = AppearanceEncoder()
        self.fc = nn.Sequential(*(EqualLinear(STYLE_DIM, STYLE_DIM) for _ in range(4)),
                                EqualLinear(STYLE_DIM, MOTION_DIM))


class Direction(nn.Module):
    """Motion weights [N, 20] -> [N, 512]: mixes of the orthonormalised (QR) columns of the stored basis."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(STYLE_DIM, MOTION_DIM))

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        basis = _ops.cast_weight(self, "weight", motion).float()
        basis = basis + 1e-8 * torch.eye(*basis.shape, device=basis.device)
        q, _ = torch.linalg.qr(basis)
        return motion @ q.T.to(motion.dtype)


class Synthesis(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.direction = Direction()


class MotionEncoder(nn.Module):
    """Face crops [N, 3, 512, 512] -> motion vectors [N, 512]."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = MotionCode()
        self.dec = Synthesis()

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.dec.direction(self.enc.fc(self.enc.net_app(faces)))


class CausalConv1d(nn.Module):
    """A 1-d convolution over time seeing only the past (the first frame repeated before the start)."""

    def __init__(self, cin: int, cout: int, stride: int, ops: Any) -> None:
        super().__init__()
        self.conv = ops.Conv1d(cin, cout, 3, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (2, 0), mode="replicate"))


class FaceEncoder(nn.Module):
    """Motion vectors [B, T, 512] -> face tokens [B, ~T / 4, 5, dim] (four heads and a learned padding token)."""

    def __init__(self, dim: int, ops: Any) -> None:
        super().__init__()
        self.conv1_local = CausalConv1d(STYLE_DIM, FACE_WIDTH * FACE_HEADS, 1, ops)
        self.conv2 = CausalConv1d(FACE_WIDTH, FACE_WIDTH, 2, ops)
        self.conv3 = CausalConv1d(FACE_WIDTH, FACE_WIDTH, 2, ops)
        self.out_proj = ops.Linear(FACE_WIDTH, dim)
        self.padding_tokens = nn.Parameter(torch.empty(1, 1, 1, dim))

    @staticmethod
    def _norm_act(x: torch.Tensor) -> torch.Tensor:
        return F.silu(F.layer_norm(x, x.shape[-1:], eps=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        x = self.conv1_local(x.transpose(1, 2)).view(b, FACE_HEADS, FACE_WIDTH, t)
        x = self._norm_act(x.flatten(0, 1).transpose(1, 2))
        x = self._norm_act(self.conv2(x.transpose(1, 2)).transpose(1, 2))
        x = self._norm_act(self.conv3(x.transpose(1, 2)).transpose(1, 2))
        x = self.out_proj(x)
        x = x.view(b, FACE_HEADS, x.shape[1], -1).transpose(1, 2)
        pad = _ops.cast_weight(self, "padding_tokens", x).expand(b, x.shape[1], 1, -1)
        return torch.cat([x, pad], dim=2)


class FaceBlock(nn.Module):
    """Each latent frame's video tokens attend to that frame's face tokens."""

    def __init__(self, c: AnimateConfig, ops: Any) -> None:
        super().__init__()
        self.heads = c.num_heads
        self.linear1_kv = ops.Linear(c.dim, 2 * c.dim)
        self.linear1_q = ops.Linear(c.dim, c.dim)
        self.linear2 = ops.Linear(c.dim, c.dim)
        self.q_norm = ops.RMSNorm(c.head_dim, eps=1e-6)
        self.k_norm = ops.RMSNorm(c.head_dim, eps=1e-6)

    def forward(self, x: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        b, frames, n, d = faces.shape
        h = self.heads
        kv = self.linear1_kv(F.layer_norm(faces, (d,), eps=1e-6)).view(b * frames, n, 2, h, d // h)
        k, v = self.k_norm(kv[:, :, 0]), kv[:, :, 1]
        q = self.q_norm(self.linear1_q(F.layer_norm(x, (d,), eps=1e-6)).view(b * frames, -1, h, d // h))
        out = optimized_attention(q.flatten(2), k.flatten(2).to(v), v.flatten(2), h)
        return self.linear2(out.reshape(b, -1, d))


class FaceAdapter(nn.Module):
    def __init__(self, c: AnimateConfig, ops: Any) -> None:
        super().__init__()
        self.fuser_blocks = nn.ModuleList([FaceBlock(c, ops) for _ in range(c.face_layers)])


class WanAnimateTransformer(WanTransformer):
    """``forward(x, timestep, context, clip_fea=, pose_latents=, face_pixel_values=)`` -> velocity like ``x``."""

    def __init__(self, config: AnimateConfig, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__(config, ops, compute_dtype)
        self.pose_patch_embedding = ops.Conv3d(16, config.dim, kernel_size=config.patch_size,
                                               stride=config.patch_size)
        self.motion_encoder = MotionEncoder()
        self.face_adapter = FaceAdapter(config, ops)
        self.face_encoder = FaceEncoder(config.dim, ops)

    def motion_vectors(self, faces: torch.Tensor) -> torch.Tensor:
        """Face crops [B, 3, T, 512, 512] -> motion vectors [B, T, 512], a few crops at a time."""
        b, _, t = faces.shape[:3]
        crops = faces.transpose(1, 2).flatten(0, 1)
        motion = torch.cat([self.motion_encoder(crops[i: i + FACE_CHUNK]) for i in range(0, len(crops), FACE_CHUNK)])
        return motion.view(b, t, -1)

    def face_tokens(self, motion: torch.Tensor, frames: int) -> torch.Tensor:
        """Motion vectors [B, T, 512] -> face tokens [B, frames, 5, dim], the first frame's and any missing zero."""
        b = motion.shape[0]
        tokens = self.face_encoder(motion)
        tokens = torch.cat([torch.zeros_like(tokens[:, :1]), tokens], dim=1)[:, :frames]
        if tokens.shape[1] < frames:
            tokens = torch.cat([tokens, tokens.new_zeros(b, frames - tokens.shape[1], *tokens.shape[2:])], dim=1)
        return tokens

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                 clip_fea: torch.Tensor | None = None, transformer_options: dict[str, Any] | None = None,
                 pose_latents: torch.Tensor | None = None, face_pixel_values: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        dtype = self.dtype
        _, _, t, h, w = x.shape
        x = pad_to_patches(x, self.patch_size)
        rope = self.rope(t, h, w, x.device, options.get("rope_options"))

        tokens = self.patch_embedding(x.to(dtype))
        if pose_latents is not None:
            pose = self.pose_patch_embedding(pad_to_patches(pose_latents.to(device=x.device, dtype=dtype),
                                                            self.patch_size))
            n = min(pose.shape[2], tokens.shape[2] - 1)
            tokens = torch.cat([tokens[:, :, :1], tokens[:, :, 1: n + 1] + pose[:, :, :n], tokens[:, :, n + 1:]],
                               dim=2)
        grid = tokens.shape[2:]
        faces = None
        if face_pixel_values is not None:
            faces = self.face_tokens(self.motion_vectors(face_pixel_values.to(device=x.device, dtype=dtype)), grid[0])
        tokens = tokens.flatten(2).transpose(1, 2)

        e, e0 = self.time_modulation(timestep.to(x.device), dtype)
        context = self.text_embedding(context.to(dtype))
        image_tokens = None
        if clip_fea is not None:
            context = torch.cat([self.img_emb(clip_fea.to(dtype)), context], dim=1)
            image_tokens = clip_fea.shape[-2]

        def face_injection(i: int, tokens: torch.Tensor) -> torch.Tensor:
            if faces is None or i % 5 or i // 5 >= len(self.face_adapter.fuser_blocks):
                return tokens
            return tokens + self.face_adapter.fuser_blocks[i // 5](tokens, faces)

        tokens = self.run_blocks(tokens, e0, rope, context, options, (image_tokens,), face_injection)
        return unpatchify(self.head(tokens, e), grid, self.patch_size, (t, h, w))
