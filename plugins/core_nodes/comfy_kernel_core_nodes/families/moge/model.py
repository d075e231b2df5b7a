"""MoGe-2's network: a DINOv2 ViT, a convolutional neck over a five-level pyramid, and per-output heads.

The ViT sees the image resized to ``rows x cols`` patches of 14 pixels (the
token budget spread over the image's aspect ratio); four of its layers,
layer-normed and each projected by a 1x1 convolution, are summed into the
first pyramid level. Every level also carries the view-plane UV grid, so the
heads know the aspect ratio. The neck and each head are :class:`ConvStack`:
per level an optional 1x1 input convolution added to the running features,
residual blocks, an optional 1x1 output convolution, then a 2x resampler to
the next level. Heads return the last level's output: the point map (x, y,
log z), surface normals, the mask logit; an MLP on the class token gives the
metric scale's log.

Module names are those of Microsoft's checkpoints (``encoder.backbone.blocks.0.attn.qkv``),
which Comfy-Org's ``geometry_estimation`` files keep, so the file loads as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model.attention import optimized_attention
from ...model.detection import Shapes

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
PATCH = 14
#: DINOv2 scales its position grid by (n + 0.1) / grid instead of to n, which shifts every sample a little
POSITION_OFFSET = 0.1


@dataclass(frozen=True)
class StackLayout:
    """One :class:`ConvStack`: per pyramid level its input width (None: no input conv), width, block count
    and output width (None: no output conv); ``resamplers`` between levels."""

    dim_in: tuple[int | None, ...]
    dims: tuple[int, ...]
    blocks: tuple[int, ...]
    dim_out: tuple[int | None, ...]
    resamplers: tuple[str, ...]
    in_norm: bool = False
    hidden_norm: bool = False


@dataclass(frozen=True)
class MoGeLayout:
    width: int
    depth: int
    grid: int  # side of the stored position grid
    ffn: int
    taps: tuple[int, ...]  # the ViT layers summed into the first level
    projection: int
    neck: StackLayout
    heads: dict[str, StackLayout]  # points_head, mask_head and normal_head when present
    scale: tuple[int, ...]  # the scale MLP's widths


def view_plane_uv(width: int, height: int, aspect: float, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """[H, W, 2] pixel-centre coordinates on a plane whose half diagonal is 1 (aspect = width / height)."""
    span_x = aspect / math.sqrt(1 + aspect ** 2)
    span_y = 1 / math.sqrt(1 + aspect ** 2)
    u = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, width, dtype=dtype, device=device)
    v = torch.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, height, dtype=dtype,
                       device=device)
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)


class Attention(nn.Module):
    def __init__(self, ops: Any, width: int) -> None:
        super().__init__()
        self.heads = width // 64
        self.qkv = ops.Linear(width, 3 * width)
        self.proj = ops.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(optimized_attention(q, k, v, self.heads))


class LayerScale(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.to(x.dtype)


class Mlp(nn.Module):
    def __init__(self, ops: Any, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = ops.Linear(width, hidden)
        self.fc2 = ops.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, ops: Any, width: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = ops.LayerNorm(width, eps=1e-6)
        self.attn = Attention(ops, width)
        self.ls1 = LayerScale(width)
        self.norm2 = ops.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(ops, width, hidden)
        self.ls2 = LayerScale(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, ops: Any, width: int) -> None:
        super().__init__()
        self.proj = ops.Conv2d(3, width, PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2(nn.Module):
    def __init__(self, ops: Any, layout: MoGeLayout) -> None:
        super().__init__()
        self.grid = layout.grid
        self.patch_embed = PatchEmbed(ops, layout.width)
        self.cls_token = nn.Parameter(torch.empty(1, 1, layout.width))
        self.pos_embed = nn.Parameter(torch.empty(1, layout.grid ** 2 + 1, layout.width))
        self.blocks = nn.ModuleList(Block(ops, layout.width, layout.ffn) for _ in range(layout.depth))
        self.norm = ops.LayerNorm(layout.width, eps=1e-6)

    def positions(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        pos = self.pos_embed.float()
        if rows == cols == self.grid:
            return pos.to(dtype)
        grid = pos[:, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        scale = ((rows + POSITION_OFFSET) / self.grid, (cols + POSITION_OFFSET) / self.grid)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        return torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1).to(dtype)

    def layers(self, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        """The normed tokens (class token first) after each layer in ``taps``."""
        rows, cols = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.to(tokens.dtype).expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.positions(rows, cols, tokens.dtype)
        out = []
        for i, block in enumerate(self.blocks[: max(taps) + 1]):
            tokens = block(tokens)
            if i in taps:
                out.append(self.norm(tokens))
        return out


class Encoder(nn.Module):
    def __init__(self, ops: Any, layout: MoGeLayout) -> None:
        super().__init__()
        self.taps = layout.taps
        self.backbone = DinoV2(ops, layout)
        self.output_projections = nn.ModuleList(ops.Conv2d(layout.width, layout.projection, 1) for _ in layout.taps)

    def forward(self, image: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed projections [B, C, rows, cols], last tap's class token)."""
        x = F.interpolate(image, (rows * PATCH, cols * PATCH), mode="bilinear", align_corners=False, antialias=True)
        mean, std = (torch.tensor(c, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) for c in (IMAGE_MEAN, IMAGE_STD))
        x = (x - mean) / std
        taps = self.backbone.layers(x, self.taps)
        features = sum(proj(t[:, 1:].transpose(1, 2).unflatten(2, (rows, cols)))
                       for proj, t in zip(self.output_projections, taps, strict=True))
        return features, taps[-1][:, 0]


class ResidualBlock(nn.Module):
    """Norm, ReLU, 3x3 conv, norm, ReLU, 3x3 conv (replicate padding), plus the input."""

    def __init__(self, ops: Any, width: int, in_norm: bool, hidden_norm: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            ops.GroupNorm(1, width) if in_norm else nn.Identity(), nn.ReLU(),
            ops.Conv2d(width, width, 3, padding=1, padding_mode="replicate"),
            ops.GroupNorm(max(width // 32, 1), width) if hidden_norm else nn.Identity(), nn.ReLU(),
            ops.Conv2d(width, width, 3, padding=1, padding_mode="replicate"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


def resampler(ops: Any, kind: str, cin: int, cout: int) -> nn.Sequential:
    """Doubles height and width, then a 3x3 convolution."""
    if kind == "conv_transpose":
        up: nn.Module = ops.ConvTranspose2d(cin, cout, 2, stride=2)
        conv_in = cout
    else:
        up, conv_in = nn.Upsample(scale_factor=2, mode=kind, align_corners=False if kind == "bilinear" else None), cin
    return nn.Sequential(up, ops.Conv2d(conv_in, cout, 3, padding=1, padding_mode="replicate"))


class ConvStack(nn.Module):
    def __init__(self, ops: Any, layout: StackLayout) -> None:
        super().__init__()
        self.input_blocks = nn.ModuleList(ops.Conv2d(c, d, 1) if c is not None else nn.Identity()
                                          for c, d in zip(layout.dim_in, layout.dims, strict=True))
        self.resamplers = nn.ModuleList(resampler(ops, kind, a, b)
                                        for kind, a, b in zip(layout.resamplers, layout.dims[:-1], layout.dims[1:],
                                                                          strict=True))
        self.res_blocks = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(ops, d, layout.in_norm, layout.hidden_norm) for _ in range(n)))
            for d, n in zip(layout.dims, layout.blocks, strict=True))
        self.output_blocks = nn.ModuleList(ops.Conv2d(d, c, 1) if c is not None else nn.Identity()
                                           for c, d in zip(layout.dim_out, layout.dims, strict=True))

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        x = None
        for i, blocks in enumerate(self.res_blocks):
            feature = self.input_blocks[i](levels[i])
            x = feature if x is None else x + feature
            x = blocks(x)
            out.append(self.output_blocks[i](x))
            if i < len(self.resamplers):
                x = self.resamplers[i](x)
        return out


class MLP(nn.Sequential):
    def __init__(self, ops: Any, dims: tuple[int, ...]) -> None:
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-2], dims[1:-1], strict=True):
            layers += [ops.Linear(a, b), nn.ReLU()]
        super().__init__(*layers, ops.Linear(dims[-2], dims[-1]))


class MoGe2(nn.Module):
    """``forward(image [B, 3, H, W] in [0, 1], tokens)`` -> raw outputs at the image's size:
    points [B, H, W, 3] (z already exp'd, x and y scaled by it), mask probability, normals, metric scale."""

    def __init__(self, ops: Any, layout: MoGeLayout) -> None:
        super().__init__()
        self.encoder = Encoder(ops, layout)
        self.neck = ConvStack(ops, layout.neck)
        for name, stack in layout.heads.items():
            setattr(self, name, ConvStack(ops, stack))
        self.scale_head = MLP(ops, layout.scale)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.backbone.pos_embed.dtype

    def forward(self, image: torch.Tensor, tokens: int) -> dict[str, torch.Tensor]:
        b, _, h, w = image.shape
        aspect = w / h
        rows, cols = round((tokens / aspect) ** 0.5), round((tokens * aspect) ** 0.5)
        features, cls = self.encoder(image, rows, cols)
        levels = []
        for level in range(5):
            uv = view_plane_uv(cols * 2 ** level, rows * 2 ** level, aspect, features.dtype, features.device)
            levels.append(uv.permute(2, 0, 1).unsqueeze(0).expand(b, -1, -1, -1))
        levels[0] = torch.cat([features, levels[0]], dim=1)
        levels = self.neck(levels)

        def head(name: str) -> torch.Tensor:
            return F.interpolate(getattr(self, name)(levels)[-1], (h, w), mode="bilinear", align_corners=False)

        raw = head("points_head").permute(0, 2, 3, 1)
        xy, log_z = raw.split([2, 1], dim=-1)
        z = log_z.exp()
        out = {"points": torch.cat([xy * z, z], dim=-1), "mask": head("mask_head").squeeze(1).sigmoid(),
               "metric_scale": self.scale_head(cls).squeeze(1).exp()}
        if hasattr(self, "normal_head"):
            out["normal"] = F.normalize(head("normal_head").permute(0, 2, 3, 1), dim=-1)
        return out


# --- layout from the file's tensor shapes ------------------------------------------------------------------------


def _count(shapes: Shapes, prefix: str) -> int:
    """How many consecutive ``prefix{i}.`` entries exist."""
    found = {int(k[len(prefix):].split(".", 1)[0]) for k in shapes if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def _stack(shapes: Shapes, prefix: str) -> StackLayout:
    levels = _count(shapes, f"{prefix}res_blocks.")
    levels = max(levels, _count(shapes, f"{prefix}input_blocks."), _count(shapes, f"{prefix}resamplers.") + 1)

    def width(i: int) -> int:
        for key, axis in ((f"{prefix}input_blocks.{i}.weight", 0), (f"{prefix}output_blocks.{i}.weight", 1),
                          (f"{prefix}res_blocks.{i}.0.layers.2.weight", 0), (f"{prefix}resamplers.{i}.0.weight", 0),
                          (f"{prefix}resamplers.{i - 1}.1.weight", 0)):
            if key in shapes:
                return int(shapes[key][axis])
        raise ValueError(f"{prefix}: no tensor gives level {i}'s width")

    def optional(key: str, axis: int) -> int | None:
        return int(shapes[key][axis]) if key in shapes else None

    return StackLayout(
        dim_in=tuple(optional(f"{prefix}input_blocks.{i}.weight", 1) for i in range(levels)),
        dims=tuple(width(i) for i in range(levels)),
        blocks=tuple(_count(shapes, f"{prefix}res_blocks.{i}.") for i in range(levels)),
        dim_out=tuple(optional(f"{prefix}output_blocks.{i}.weight", 0) for i in range(levels)),
        resamplers=tuple("conv_transpose" if f"{prefix}resamplers.{i}.0.weight" in shapes else "bilinear"
                         for i in range(levels - 1)),
        in_norm=any(k.startswith(prefix + "res_blocks.") and ".layers.0.weight" in k for k in shapes),
        hidden_norm=any(k.startswith(prefix + "res_blocks.") and ".layers.3.weight" in k for k in shapes))


def is_moge(shapes: Shapes) -> bool:
    return "encoder.backbone.pos_embed" in shapes or "backbone.pos_embed" in shapes


def moge_version(shapes: Shapes) -> int:
    if "encoder.backbone.pos_embed" not in shapes:
        return 1
    return 3 if any(k.startswith("refiner.") for k in shapes) else 2


def detect(shapes: Shapes) -> MoGeLayout:
    """MoGe-2's layout from its tensor shapes; the four taps are spread evenly over the ViT's depth."""
    width = int(shapes["encoder.backbone.cls_token"][-1])
    depth = _count(shapes, "encoder.backbone.blocks.")
    if "encoder.backbone.blocks.0.mlp.fc1.weight" not in shapes:
        raise ValueError("MoGe with a SwiGLU ViT (ViT-g) is not supported")
    taps = _count(shapes, "encoder.output_projections.")
    scale = sorted(int(k.split(".")[1]) for k in shapes if k.startswith("scale_head.") and k.endswith(".weight"))
    return MoGeLayout(
        width=width, depth=depth, grid=math.isqrt(int(shapes["encoder.backbone.pos_embed"][1]) - 1),
        ffn=int(shapes["encoder.backbone.blocks.0.mlp.fc1.weight"][0]),
        taps=tuple((depth // taps) * (i + 1) - 1 for i in range(taps)),
        projection=int(shapes["encoder.output_projections.0.weight"][0]),
        neck=_stack(shapes, "neck."),
        heads={name: _stack(shapes, f"{name}.") for name in ("points_head", "mask_head", "normal_head")
               if any(k.startswith(name + ".") for k in shapes)},
        scale=(int(shapes[f"scale_head.{scale[0]}.weight"][1]),
               *(int(shapes[f"scale_head.{i}.weight"][0]) for i in scale)))
