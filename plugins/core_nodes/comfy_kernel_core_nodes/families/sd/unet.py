"""The Stable Diffusion UNet (LDM "openaimodel" layout) of SD1.x, SD2.x and SDXL, with ComfyUI's patch points.

Submodule names reproduce the checkpoint keys under ``model.diffusion_model.``
(``input_blocks.N.M``, ``middle_block``, ``output_blocks``, ``time_embed``,
``label_emb``, ``out``), so a state dict loads without renaming; the layout
(levels, res blocks, transformer depths, widths) is read from the keys.

``transformer_options`` carries the model patches of the MODEL being sampled
and ComfyUI's bookkeeping, and the network calls them where ComfyUI does:
``emb_patch`` on the time embedding; per input block ``input_block_patch`` and
``input_block_patch_after_skip``; ``middle_block_patch``;
``output_block_patch(h, hsp)`` before each skip concatenation; in every
transformer block ``attn1_patch`` / ``attn2_patch`` (on the normed input, its
context and value), the ``attn1`` / ``attn2`` replacements (keyed by
``(block, id, index)`` or ``(block, id)``, called with projected q, k, v),
``attn1_output_patch`` / ``attn2_output_patch`` and ``middle_patch`` (GLIGEN).
ControlNet residuals (``control["input"|"middle"|"output"]``) are added where
ComfyUI adds them. ``transformer_options["block"]`` is ``("input"|"middle"|
"output", index)`` and ``"block_index"`` the block within a transformer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import extension
from ...model import ops as _ops
from ...model.attention import optimized_attention

log = logging.getLogger(__name__)


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
    num_head_channels: int = -1
    use_linear_in_transformer: bool = False
    adm_in_channels: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4

    def heads(self, channels: int) -> int:
        return channels // self.num_head_channels if self.num_head_channels > 0 else self.num_heads


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of the timesteps: cosines first, then sines."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _group_norm(channels: int, eps: float = 1e-5, ops: Any = _ops.plain) -> nn.Module:
    return ops.GroupNorm(32, channels, eps=eps)


def apply_control(h: torch.Tensor, control: dict[str, list] | None, name: str) -> torch.Tensor:
    """Add the next ControlNet residual for this position (they are consumed from the end)."""
    if control is not None and name in control and len(control[name]) > 0:
        ctrl = control[name].pop()
        if ctrl is not None:
            try:
                h = h + ctrl
            except RuntimeError:
                log.warning("control could not be applied: %s %s", tuple(h.shape), tuple(ctrl.shape))
    return h


class ResBlock(nn.Module):
    def __init__(self, channels: int, out_channels: int, emb_dim: int, ops: Any = _ops.plain) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(_group_norm(channels, ops=ops), nn.SiLU(),
                                       ops.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), ops.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(_group_norm(out_channels, ops=ops), nn.SiLU(), nn.Dropout(0.0),
                                        ops.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if channels == out_channels else ops.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels: int, ops: Any = _ops.plain) -> None:
        super().__init__()
        self.op = ops.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 (or to the size of the matching skip tensor), then a 3x3 conv."""

    def __init__(self, channels: int, ops: Any = _ops.plain) -> None:
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class CrossAttention(nn.Module):
    """Multi-head attention; self-attention when no context is given. ``value`` may differ from ``context``."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, ops: Any = _ops.plain) -> None:
        super().__init__()
        self.heads = heads
        context_dim = context_dim or dim
        self.to_q = ops.Linear(dim, dim, bias=False)
        self.to_k = ops.Linear(context_dim, dim, bias=False)
        self.to_v = ops.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Sequential(ops.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, value: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, transformer_options: dict[str, Any] | None = None) -> torch.Tensor:
        context = x if context is None else context
        value = context if value is None else value
        out = optimized_attention(self.to_q(x), self.to_k(context), self.to_v(value), self.heads, mask)
        return self.to_out(out)


class GEGLU(nn.Module):
    """Linear projection to value and gate halves; value * GELU(gate) with the exact (erf) GELU."""

    def __init__(self, dim: int, inner: int, ops: Any = _ops.plain) -> None:
        super().__init__()
        self.proj = ops.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, ops: Any = _ops.plain) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult, ops), nn.Dropout(0.0), ops.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int, ops: Any = _ops.plain) -> None:
        super().__init__()
        self.n_heads = heads
        self.d_head = dim // heads
        self.attn1 = CrossAttention(dim, heads, ops=ops)
        self.ff = FeedForward(dim, ops=ops)
        self.attn2 = CrossAttention(dim, heads, context_dim, ops=ops)
        self.norm1 = ops.LayerNorm(dim)
        self.norm2 = ops.LayerNorm(dim)
        self.norm3 = ops.LayerNorm(dim)

    def _replaced(self, attn: CrossAttention, fn: Any, n: torch.Tensor, context: torch.Tensor,
                  value: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
        out = fn(attn.to_q(n), attn.to_k(context), attn.to_v(value), extra)
        return attn.to_out(out)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                transformer_options: dict[str, Any] | None = None) -> torch.Tensor:
        options = transformer_options or {}
        patches = options.get("patches", {})
        replace = options.get("patches_replace", {})
        extra = {k: v for k, v in options.items() if k not in ("patches", "patches_replace")}
        extra["n_heads"] = self.n_heads
        extra["dim_head"] = self.d_head
        extra["attn_precision"] = None
        block = options.get("block")
        block_index = options.get("block_index", 0)
        transformer_block = (block[0], block[1], block_index) if block is not None else None

        n = self.norm1(x)
        context_attn1 = value_attn1 = None
        if "attn1_patch" in patches:
            context_attn1 = value_attn1 = n
            for patch in patches["attn1_patch"]:
                n, context_attn1, value_attn1 = patch(n, context_attn1, value_attn1, extra)
        attn1_replace = replace.get("attn1", {})
        key = transformer_block if transformer_block in attn1_replace else block
        if key in attn1_replace:
            context_attn1 = n if context_attn1 is None else context_attn1
            value_attn1 = context_attn1 if value_attn1 is None else value_attn1
            n = self._replaced(self.attn1, attn1_replace[key], n, context_attn1, value_attn1, extra)
        else:
            n = self.attn1(n, context=context_attn1, value=value_attn1, transformer_options=extra)
        for patch in patches.get("attn1_output_patch", ()):
            n = patch(n, extra)
        x = x + n
        for patch in patches.get("middle_patch", ()):
            x = patch(x, extra)

        n = self.norm2(x)
        context_attn2, value_attn2 = context, None
        if "attn2_patch" in patches:
            value_attn2 = context_attn2
            for patch in patches["attn2_patch"]:
                n, context_attn2, value_attn2 = patch(n, context_attn2, value_attn2, extra)
        attn2_replace = replace.get("attn2", {})
        key = transformer_block if transformer_block in attn2_replace else block
        if key in attn2_replace:
            value_attn2 = context_attn2 if value_attn2 is None else value_attn2
            n = self._replaced(self.attn2, attn2_replace[key], n, context_attn2, value_attn2, extra)
        else:
            n = self.attn2(n, context=context_attn2, value=value_attn2, transformer_options=extra)
        for patch in patches.get("attn2_output_patch", ()):
            n = patch(n, extra)
        x = x + n
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Image features as a token sequence: self-attention, cross-attention to the text, feed-forward."""

    def __init__(self, channels: int, heads: int, depth: int, context_dim: int, use_linear: bool = False,
                 ops: Any = _ops.plain) -> None:
        super().__init__()
        self.use_linear = use_linear
        self.norm = _group_norm(channels, eps=1e-6, ops=ops)
        self.proj_in = ops.Linear(channels, channels) if use_linear else ops.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(BasicTransformerBlock(channels, heads, context_dim, ops)
                                                for _ in range(depth))
        self.proj_out = ops.Linear(channels, channels) if use_linear else ops.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: Any, transformer_options: dict[str, Any] | None = None) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        if not isinstance(context, list):
            context = [context] * len(self.transformer_blocks)
        b, c, h, w = x.shape
        options["activations_shape"] = list(x.shape)
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.flatten(2).transpose(1, 2)
        if self.use_linear:
            x = self.proj_in(x)
        for i, block in enumerate(self.transformer_blocks):
            options["block_index"] = i
            x = block(x, context[i], options)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(b, c, h, w)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class TimestepBlock(nn.Sequential):
    """A block of the UNet: its parts receive the time embedding, the context or the skip size as they need."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, emb: torch.Tensor, context: Any, transformer_options: dict[str, Any],
        up_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        custom = transformer_options.get("patches", {}).get("forward_timestep_embed_patch", ())
        for layer in self:
            handler = next((fn for cls, fn in custom if isinstance(layer, cls)), None)
            if handler is not None:
                x = handler(layer, x, emb, context, transformer_options, up_size, None, None, None)
            elif isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, transformer_options)
                if "transformer_index" in transformer_options:
                    transformer_options["transformer_index"] += 1
            elif isinstance(layer, Upsample):
                x = layer(x, up_size)
            else:
                x = layer(x)
        return x


class UNetModel(nn.Module):
    """The UNet; ``ops`` is the layer namespace (model/ops.py): casting layers for fp8 / mixed precision."""

    def __init__(self, config: UNetConfig, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.model_channels = mc = c.model_channels
        self.compute_dtype = compute_dtype
        emb_dim = c.time_embed_dim

        def transformer(ch: int, depth: int) -> SpatialTransformer:
            return SpatialTransformer(ch, c.heads(ch), depth, c.context_dim, c.use_linear_in_transformer, ops)

        self.time_embed = nn.Sequential(ops.Linear(mc, emb_dim), nn.SiLU(), ops.Linear(emb_dim, emb_dim))
        if c.adm_in_channels:
            self.label_emb = nn.Sequential(nn.Sequential(
                ops.Linear(c.adm_in_channels, emb_dim), nn.SiLU(), ops.Linear(emb_dim, emb_dim)))
        self.input_blocks = nn.ModuleList([TimestepBlock(ops.Conv2d(c.in_channels, mc, 3, padding=1))])
        skip_channels = [mc]
        ch = mc
        block = 0
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks[level]):
                layers: list[nn.Module] = [ResBlock(ch, mult * mc, emb_dim, ops)]
                ch = mult * mc
                if c.transformer_depth[block] > 0:
                    layers.append(transformer(ch, c.transformer_depth[block]))
                block += 1
                self.input_blocks.append(TimestepBlock(*layers))
                skip_channels.append(ch)
            if level != len(c.channel_mult) - 1:
                self.input_blocks.append(TimestepBlock(Downsample(ch, ops)))
                skip_channels.append(ch)

        self.middle_block: TimestepBlock | None = None
        if c.transformer_depth_middle is not None:
            middle: list[nn.Module] = [ResBlock(ch, ch, emb_dim, ops)]
            if c.transformer_depth_middle >= 0:
                middle += [transformer(ch, c.transformer_depth_middle), ResBlock(ch, ch, emb_dim, ops)]
            self.middle_block = TimestepBlock(*middle)

        self.output_blocks = nn.ModuleList()
        block = 0
        for level in reversed(range(len(c.channel_mult))):
            mult = c.channel_mult[level]
            for i in range(c.num_res_blocks[level] + 1):
                layers = [ResBlock(ch + skip_channels.pop(), mult * mc, emb_dim, ops)]
                ch = mult * mc
                if c.transformer_depth_output[block] > 0:
                    layers.append(transformer(ch, c.transformer_depth_output[block]))
                block += 1
                if level and i == c.num_res_blocks[level]:
                    layers.append(Upsample(ch, ops))
                self.output_blocks.append(TimestepBlock(*layers))

        self.out = nn.Sequential(_group_norm(ch, ops=ops), nn.SiLU(), ops.Conv2d(mc, c.out_channels, 3, padding=1))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the network computes in (its weights' unless they are cast, e.g. fp8)."""
        return self.compute_dtype or self.out[2].weight.dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                y: torch.Tensor | None = None, control: dict[str, list] | None = None,
                transformer_options: dict[str, Any] | None = None, **kwargs: Any) -> torch.Tensor:
        """The network output (float32) for latents x at (integer-valued) timesteps, given the text context."""
        options = transformer_options if transformer_options is not None else {}
        wrappers = extension.get_all_wrappers(extension.WrappersMP.DIFFUSION_MODEL, options)
        return extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timesteps, context, y, control, options, **kwargs)

    def _forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                 y: torch.Tensor | None = None, control: dict[str, list] | None = None,
                 transformer_options: dict[str, Any] | None = None, **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        options["original_shape"] = list(x.shape)
        options["transformer_index"] = 0
        patches = options.get("patches", {})
        dtype, device = self.dtype, self.out[2].weight.device
        emb = self.time_embed(timestep_embedding(timesteps.to(device), self.model_channels).to(dtype))
        for patch in patches.get("emb_patch", ()):
            emb = patch(emb, self.model_channels, options)
        if y is not None and hasattr(self, "label_emb"):
            emb = emb + self.label_emb(y.to(device=device, dtype=dtype))
        if context is not None:
            context = context.to(device=device, dtype=dtype)
        h = x.to(device=device, dtype=dtype)
        skips = []
        for i, blk in enumerate(self.input_blocks):
            options["block"] = ("input", i)
            h = blk(h, emb, context, options)
            h = apply_control(h, control, "input")
            for patch in patches.get("input_block_patch", ()):
                h = patch(h, options)
            skips.append(h)
            for patch in patches.get("input_block_patch_after_skip", ()):
                h = patch(h, options)
        options["block"] = ("middle", 0)
        if self.middle_block is not None:
            h = self.middle_block(h, emb, context, options)
        h = apply_control(h, control, "middle")
        for patch in patches.get("middle_block_patch", ()):
            h = patch(h, options)
        for i, blk in enumerate(self.output_blocks):
            options["block"] = ("output", i)
            hsp = apply_control(skips.pop(), control, "output")
            for patch in patches.get("output_block_patch", ()):
                h, hsp = patch(h, hsp, options)
            h = torch.cat([h, hsp], dim=1)
            up_size = tuple(skips[-1].shape[2:]) if skips else None
            h = blk(h, emb, context, options, up_size)
        return self.out(h.to(dtype)).float()
