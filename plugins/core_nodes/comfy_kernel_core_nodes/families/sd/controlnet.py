"""ControlNets of the Stable Diffusion UNet family (SD1.x, SD2.x, SDXL), in the original LDM layout.

A ControlNet is a copy of the UNet's encoder (time embedding, input blocks,
middle block) that also sees a *hint* image: ``input_hint_block`` maps the
hint (at pixel resolution) to the first block's width, it is added after
``input_blocks.0``, and a 1x1 "zero convolution" after every input block and
after the middle block turns the encoder's features into residuals the UNet
adds to its skip connections and middle output (``apply_control``).

Module names reproduce the checkpoint keys (``input_blocks``, ``zero_convs``,
``input_hint_block``, ``middle_block``, ``middle_block_out``, ``time_embed``,
``label_emb``), so the original files load without renaming. Files in the
diffusers layout are renamed on read (:func:`diffusers_to_ldm`); their layout
is read from the keys, so every UNet width and depth works, not only the
released ones. *Union* ControlNets (one network, several control types) add a
task embedding and a small transformer that mixes the hint with the type.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.attention import optimized_attention
from ...model.detection import Shapes
from .unet import Downsample, ResBlock, SpatialTransformer, TimestepBlock, UNetConfig, timestep_embedding

#: SetUnionControlNetType's control types and their task embedding rows.
UNION_CONTROLNET_TYPES = {
    "openpose": 0,
    "depth": 1,
    "hed/pidi/scribble/ted": 2,
    "canny/lineart/anime_lineart/mlsd": 3,
    "normal": 4,
    "segment": 5,
    "tile": 6,
    "repaint": 7,
}


class _UnionAttention(nn.Module):
    def __init__(self, c: int, heads: int, ops: Any) -> None:
        super().__init__()
        self.heads = heads
        self.c = c
        self.in_proj = ops.Linear(c, c * 3)
        self.out_proj = ops.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.in_proj(x).split(self.c, dim=2)
        return self.out_proj(optimized_attention(q, k, v, self.heads))


class _UnionBlock(nn.Module):
    """One pre-LayerNorm transformer layer (QuickGELU MLP) mixing the hint summaries of the control types."""

    def __init__(self, dim: int, heads: int, ops: Any) -> None:
        super().__init__()
        self.attn = _UnionAttention(dim, heads, ops)
        self.ln_1 = ops.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", ops.Linear(dim, dim * 4))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", ops.Linear(dim * 4, dim))
        self.ln_2 = ops.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _ControlAddEmbedding(nn.Module):
    """The chosen control type (one-hot over the types, each sinusoidally embedded) as a time-embedding term."""

    def __init__(self, in_dim: int, out_dim: int, num_control_type: int, ops: Any) -> None:
        super().__init__()
        self.num_control_type = num_control_type
        self.in_dim = in_dim
        self.linear_1 = ops.Linear(in_dim * num_control_type, out_dim)
        self.linear_2 = ops.Linear(out_dim, out_dim)

    def forward(self, control_type: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        c_type = torch.zeros((self.num_control_type,), device=device)
        c_type[control_type] = 1.0
        emb = timestep_embedding(c_type.flatten(), self.in_dim).to(dtype)
        emb = emb.reshape((-1, self.num_control_type * self.in_dim))
        return self.linear_2(F.silu(self.linear_1(emb)))


class ControlNetModel(nn.Module):
    """The ControlNet network; ``forward`` returns ``{"output": [per input block], "middle": [one]}``."""

    def __init__(self, config: UNetConfig, hint_channels: int, ops: Any = _ops.plain,
                 compute_dtype: torch.dtype | None = None, union_types: int | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.model_channels = mc = c.model_channels
        self.compute_dtype = compute_dtype
        emb_dim = c.time_embed_dim

        def transformer(ch: int, depth: int) -> SpatialTransformer:
            return SpatialTransformer(ch, c.heads(ch), depth, c.context_dim, c.use_linear_in_transformer, ops)

        def zero_conv(ch: int) -> TimestepBlock:
            return TimestepBlock(ops.Conv2d(ch, ch, 1, padding=0))

        self.time_embed = nn.Sequential(ops.Linear(mc, emb_dim), nn.SiLU(), ops.Linear(emb_dim, emb_dim))
        if c.adm_in_channels:
            self.label_emb = nn.Sequential(nn.Sequential(
                ops.Linear(c.adm_in_channels, emb_dim), nn.SiLU(), ops.Linear(emb_dim, emb_dim)))
        self.input_blocks = nn.ModuleList([TimestepBlock(ops.Conv2d(c.in_channels, mc, 3, padding=1))])
        self.zero_convs = nn.ModuleList([zero_conv(mc)])
        widths = [(hint_channels, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 96, 2), (96, 96, 1),
                  (96, 256, 2), (256, mc, 1)]
        hint: list[nn.Module] = []
        for i, (cin, cout, stride) in enumerate(widths):
            hint.append(ops.Conv2d(cin, cout, 3, padding=1, stride=stride))
            if i < len(widths) - 1:
                hint.append(nn.SiLU())
        self.input_hint_block = TimestepBlock(*hint)
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
                self.zero_convs.append(zero_conv(ch))
            if level != len(c.channel_mult) - 1:
                self.input_blocks.append(TimestepBlock(Downsample(ch, ops)))
                self.zero_convs.append(zero_conv(ch))
        middle: list[nn.Module] = [ResBlock(ch, ch, emb_dim, ops)]
        if (c.transformer_depth_middle or 0) >= 0:
            middle += [transformer(ch, c.transformer_depth_middle or 0), ResBlock(ch, ch, emb_dim, ops)]
        self.middle_block = TimestepBlock(*middle)
        self.middle_block_out = zero_conv(ch)
        self.num_control_type = union_types
        if union_types is not None:
            width = 320
            self.task_embedding = nn.Parameter(torch.empty(union_types, width))
            self.transformer_layes = nn.Sequential(_UnionBlock(width, 8, ops))
            self.spatial_ch_projs = ops.Linear(width, width)
            self.control_add_embedding = _ControlAddEmbedding(256, emb_dim, union_types, ops)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.input_blocks[0][0].weight.dtype

    def _union_hint(self, hint: torch.Tensor, control_type: list[int], emb: torch.Tensor,
                    context: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        inputs, conditions = [], []
        for idx in range(min(1, len(control_type))):
            cond = self.input_hint_block(hint[idx], emb, context, options)
            feat = torch.mean(cond, dim=(2, 3))
            feat = feat + self.task_embedding[control_type[idx]].to(dtype=feat.dtype, device=feat.device)
            inputs.append(feat.unsqueeze(1))
            conditions.append(cond)
        x = self.transformer_layes(torch.cat(inputs, dim=1))
        fused = None
        for idx in range(len(control_type)):
            alpha = self.spatial_ch_projs(x[:, idx]).unsqueeze(-1).unsqueeze(-1)
            fused = conditions[idx] + alpha if fused is None else fused + conditions[idx] + alpha
        return fused

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                y: torch.Tensor | None = None, **kwargs: Any) -> dict[str, list[torch.Tensor]]:
        options: dict[str, Any] = {}
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        guided_hint = None
        if self.num_control_type is not None:
            control_type = kwargs.get("control_type", [])
            if any(t >= self.num_control_type for t in control_type):
                names = {v: k for k, v in UNION_CONTROLNET_TYPES.items()}
                worst = max(control_type)
                raise ValueError(f"Control type {names.get(worst, worst)}({worst}) is out of range for the number of "
                                 f"control types ({self.num_control_type}) this union ControlNet supports; a ProMax "
                                 "union model supports all of them.")
            emb = emb + self.control_add_embedding(control_type, emb.dtype, emb.device)
            if len(control_type) > 0:
                if hint.ndim < 5:
                    hint = hint.unsqueeze(0)
                guided_hint = self._union_hint(hint, control_type, emb, context, options)
        if guided_hint is None:
            guided_hint = self.input_hint_block(hint, emb, context, options)
        if y is not None and hasattr(self, "label_emb"):
            emb = emb + self.label_emb(y)
        outputs = []
        h = x
        for module, zero_conv in zip(self.input_blocks, self.zero_convs, strict=True):
            h = module(h, emb, context, options)
            if guided_hint is not None:
                h = h + guided_hint
                guided_hint = None
            outputs.append(zero_conv(h, emb, context, options))
        h = self.middle_block(h, emb, context, options)
        return {"middle": [self.middle_block_out(h, emb, context, options)], "output": outputs}


# --- layouts -----------------------------------------------------------------------------------


def ldm_layout(shapes: Shapes, prefix: str) -> dict[str, Any] | None:
    """ComfyUI-style ``unet_config`` of the LDM ControlNet under ``prefix`` (the UNet detector, less ``out``)."""
    from .detect import unet_config

    if prefix + "input_blocks.0.0.weight" not in shapes or prefix + "input_hint_block.0.weight" not in shapes:
        return None
    shapes = dict(shapes)
    mc = shapes[prefix + "input_blocks.0.0.weight"][0]
    shapes.setdefault(prefix + "out.2.weight", (4, mc, 3, 3))  # a ControlNet has no output layer
    return unet_config(shapes, prefix)


def _count(shapes: Shapes, pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in shapes if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def diffusers_layout(shapes: Shapes) -> dict[str, Any] | None:
    """The ``unet_config`` of a ControlNet in the diffusers layout, read from its key names and shapes."""
    if "conv_in.weight" not in shapes or "controlnet_cond_embedding.conv_in.weight" not in shapes:
        return None
    model_channels, in_channels = shapes["conv_in.weight"][:2]
    channel_mult, num_res_blocks, depth = [], [], []
    context_dim, use_linear = None, False
    for level in range(_count(shapes, r"down_blocks\.(\d+)\.")):
        res = _count(shapes, rf"down_blocks\.{level}\.resnets\.(\d+)\.")
        num_res_blocks.append(res)
        channel_mult.append(shapes[f"down_blocks.{level}.resnets.0.conv2.weight"][0] // model_channels)
        for j in range(res):
            d = _count(shapes, rf"down_blocks\.{level}\.attentions\.{j}\.transformer_blocks\.(\d+)\.")
            depth.append(d)
            if d and context_dim is None:
                context_dim = shapes[f"down_blocks.{level}.attentions.{j}.transformer_blocks.0.attn2.to_k.weight"][1]
                use_linear = len(shapes[f"down_blocks.{level}.attentions.{j}.proj_in.weight"]) == 2
    middle = _count(shapes, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
    if middle and context_dim is None:
        context_dim = shapes["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"][1]
        use_linear = len(shapes["mid_block.attentions.0.proj_in.weight"]) == 2
    adm = None
    for key in ("add_embedding.linear_1.weight", "class_embedding.linear_1.weight"):
        if key in shapes:
            adm = shapes[key][1]
    return {
        "in_channels": int(in_channels), "out_channels": int(in_channels), "model_channels": int(model_channels),
        "channel_mult": tuple(channel_mult), "num_res_blocks": tuple(num_res_blocks),
        "transformer_depth": tuple(depth), "transformer_depth_output": (),
        "transformer_depth_middle": middle if "mid_block.attentions.0.proj_in.weight" in shapes else -1,
        "context_dim": int(context_dim) if context_dim is not None else None,
        "use_linear_in_transformer": use_linear, "adm_in_channels": int(adm) if adm is not None else None,
        "use_temporal_attention": False,
    }


def diffusers_to_ldm(config: dict[str, Any], shapes: Shapes, ldm_keys: set[str]) -> dict[str, str]:
    """diffusers ControlNet key -> LDM key, for the layout ``config`` whose network has ``ldm_keys``."""
    from ...model.lora import unet_to_diffusers

    names = unet_to_diffusers(config, ldm_keys)
    for suffix in (".weight", ".bias"):
        names["controlnet_mid_block" + suffix] = "middle_block_out.0" + suffix
        for n in range(_count(shapes, r"controlnet_down_blocks\.(\d+)\.")):
            names[f"controlnet_down_blocks.{n}{suffix}"] = f"zero_convs.{n}.0{suffix}"
        names["controlnet_cond_embedding.conv_in" + suffix] = "input_hint_block.0" + suffix
        blocks = _count(shapes, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
        for n in range(blocks):
            names[f"controlnet_cond_embedding.blocks.{n}{suffix}"] = f"input_hint_block.{(n + 1) * 2}{suffix}"
        names["controlnet_cond_embedding.conv_out" + suffix] = f"input_hint_block.{(blocks + 1) * 2}{suffix}"
    return names


def union_rename(key: str) -> str:
    """Union ControlNets name the fused attention projection ``in_proj_weight``; the network has a Linear."""
    return key.replace(".attn.in_proj_", ".attn.in_proj.")
