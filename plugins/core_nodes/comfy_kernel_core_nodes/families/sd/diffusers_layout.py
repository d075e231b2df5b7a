"""Stable Diffusion UNets saved by diffusers (``UNet2DConditionModel``), read under the LDM names.

Diffusers groups the same layers by resolution level (``down_blocks.L.resnets.J``,
``attentions.J``, ``downsamplers``, ``mid_block``, ``up_blocks``) where the LDM
layout numbers blocks in order (``input_blocks.N``, ``middle_block``,
``output_blocks.N``). The layout (levels, res blocks, transformer depths, widths,
the SDXL size embedding, Lotus-D's task embedding) is read from the diffusers keys, the LDM network of that
layout is built on the meta device for its key names, and the two are paired by
:func:`...model.lora.unet_to_diffusers` (the map LoRA files use too). Every width
and depth works, not only the released models'.
"""

from __future__ import annotations

import re
from typing import Any

from ...model.detection import Shapes, count
from ...model.folders import KeyLayout


def is_diffusers_unet(shapes: Shapes) -> bool:
    return ("conv_in.weight" in shapes and "time_embedding.linear_1.weight" in shapes
            and "down_blocks.0.resnets.0.conv1.weight" in shapes and "up_blocks.0.resnets.0.conv1.weight" in shapes
            and "conv_out.weight" in shapes and "controlnet_cond_embedding.conv_in.weight" not in shapes)


def _attention(shapes: Shapes, prefix: str) -> tuple[int, int, bool]:
    """(transformer depth, context width, linear projections) of an attention block, (0, 0, False) if absent."""
    depth = count(shapes, re.escape(prefix) + r"transformer_blocks\.(\d+)\.")
    if not depth:
        return 0, 0, False
    context = shapes[prefix + "transformer_blocks.0.attn2.to_k.weight"][1]
    return depth, int(context), len(shapes[prefix + "proj_in.weight"]) == 2


def unet_config(shapes: Shapes) -> dict[str, Any] | None:
    """ComfyUI's ``unet_config`` of a diffusers-layout UNet, or None if the keys are not one."""
    if not is_diffusers_unet(shapes):
        return None
    model_channels, in_channels = shapes["conv_in.weight"][:2]
    channel_mult, num_res_blocks, depth_in = [], [], []
    found: list[tuple[int, int, bool]] = []
    levels = count(shapes, r"down_blocks\.(\d+)\.")
    for level in range(levels):
        res = count(shapes, rf"down_blocks\.{level}\.resnets\.(\d+)\.")
        num_res_blocks.append(res)
        channel_mult.append(int(shapes[f"down_blocks.{level}.resnets.0.conv2.weight"][0]) // int(model_channels))
        for j in range(res):
            attn = _attention(shapes, f"down_blocks.{level}.attentions.{j}.")
            depth_in.append(attn[0])
            found.append(attn)
    depth_out = []
    for i in range(levels):
        for j in range(count(shapes, rf"up_blocks\.{i}\.resnets\.(\d+)\.")):
            attn = _attention(shapes, f"up_blocks.{i}.attentions.{j}.")
            depth_out.append(attn[0])
            found.append(attn)
    if "mid_block.resnets.0.conv1.weight" not in shapes:
        depth_middle = None
    elif "mid_block.attentions.0.proj_in.weight" in shapes:
        attn = _attention(shapes, "mid_block.attentions.0.")
        depth_middle = attn[0]
        found.append(attn)
    else:
        depth_middle = -1
    with_attention = [a for a in found if a[0]]
    context_dim, use_linear = (with_attention[0][1], with_attention[0][2]) if with_attention else (None, False)
    # SDXL's size/pooled vector goes through add_embedding, Lotus-D's task vector through class_embedding
    adm_key = next((k for k in ("add_embedding.linear_1.weight", "class_embedding.linear_1.weight") if k in shapes),
                   None)
    adm = shapes[adm_key][1] if adm_key is not None else None
    return {
        "in_channels": int(in_channels),
        "out_channels": int(shapes["conv_out.weight"][0]),
        "model_channels": int(model_channels),
        "channel_mult": tuple(channel_mult),
        "num_res_blocks": tuple(num_res_blocks),
        "transformer_depth": tuple(depth_in),
        "transformer_depth_output": tuple(depth_out[::-1]),  # ComfyUI's order: from the shallowest level up
        "transformer_depth_middle": depth_middle,
        "context_dim": context_dim,
        "use_linear_in_transformer": use_linear,
        "adm_in_channels": int(adm) if adm is not None else None,
        "use_temporal_attention": False,
    }


def ldm_keys(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the LDM UNet of layout ``config`` (built on the meta device: nothing allocated)."""
    import torch

    from .models import unet_layout
    from .unet import UNetModel

    with torch.device("meta"):
        model = UNetModel(unet_layout({**config, "num_heads": -1, "num_head_channels": 1,
                                       "context_dim": config["context_dim"] or 0}))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def unet_key_layout(shapes: Shapes) -> KeyLayout | None:
    """The renaming of a diffusers UNet's keys to the LDM names (for :data:`...model.detection.KEY_LAYOUTS`)."""
    config = unet_config(shapes)
    if config is None:
        return None
    from ...model.lora import unet_to_diffusers

    names = {theirs: ours for theirs, ours in unet_to_diffusers(config, set(ldm_keys(config))).items()
             if theirs in shapes}
    return KeyLayout(names=names)
