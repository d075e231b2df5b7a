"""Reading a Stable Diffusion UNet's layout from its keys (SD1.x, SD2.x, SDXL and their fine-tunes).

The layout is not fixed across the family (levels, res blocks per level,
transformer depth per block, widths, label embedding), so it is derived from
the tensor names and shapes alone, without loading anything.
"""

from __future__ import annotations

import re
from typing import Any

from ...model.detection import Shapes


def _indices(keys: list[str], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _depth(keys: list[str], prefix: str) -> int:
    return len(_indices(keys, re.escape(prefix) + r"transformer_blocks\.(\d+)\."))


def unet_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """ComfyUI-style ``unet_config`` of the LDM UNet under ``prefix``, or None if there is none."""
    if prefix + "input_blocks.0.0.weight" not in shapes or prefix + "out.2.weight" not in shapes:
        return None
    keys = [k[len(prefix):] for k in shapes if k.startswith(prefix)]
    shape = lambda k: shapes[prefix + k]  # noqa: E731
    model_channels, in_channels = shape("input_blocks.0.0.weight")[:2]
    channel_mult: list[int] = []
    num_res_blocks: list[int] = []
    depth_in: list[int] = []
    context_dim = None
    use_linear = False
    level_blocks = 0
    for idx in _indices(keys, r"input_blocks\.(\d+)\.")[1:]:
        p = f"input_blocks.{idx}."
        if prefix + p + "0.op.weight" in shapes:
            num_res_blocks.append(level_blocks)
            level_blocks = 0
            continue
        if prefix + p + "0.out_layers.3.weight" not in shapes:
            return None
        out_ch = shape(p + "0.out_layers.3.weight")[0]
        if level_blocks == 0:
            channel_mult.append(out_ch // model_channels)
        level_blocks += 1
        depth = _depth(keys, p + "1.")
        depth_in.append(depth)
        if depth and context_dim is None:
            context_dim = shape(p + "1.transformer_blocks.0.attn2.to_k.weight")[1]
            use_linear = len(shape(p + "1.proj_in.weight")) == 2
    num_res_blocks.append(level_blocks)
    # ComfyUI lists the output side's depths from the shallowest level up (reversed block order)
    depth_out = [_depth(keys, f"output_blocks.{i}.1.") for i in _indices(keys, r"output_blocks\.(\d+)\.")][::-1]
    if "middle_block.0.in_layers.0.weight" not in keys:
        depth_middle = None
    elif "middle_block.1.proj_in.weight" in keys:
        depth_middle = _depth(keys, "middle_block.1.")
        if context_dim is None:
            context_dim = shape("middle_block.1.transformer_blocks.0.attn2.to_k.weight")[1]
            use_linear = len(shape("middle_block.1.proj_in.weight")) == 2
    else:
        depth_middle = -1
    adm = shape("label_emb.0.0.weight")[1] if "label_emb.0.0.weight" in keys else None
    return {
        "in_channels": int(in_channels),
        "out_channels": int(shape("out.2.weight")[0]),
        "model_channels": int(model_channels),
        "channel_mult": tuple(channel_mult),
        "num_res_blocks": tuple(num_res_blocks),
        "transformer_depth": tuple(depth_in),
        "transformer_depth_output": tuple(depth_out),
        "transformer_depth_middle": depth_middle,
        "context_dim": int(context_dim) if context_dim is not None else None,
        "use_linear_in_transformer": use_linear,
        "adm_in_channels": int(adm) if adm is not None else None,
        "use_temporal_attention": any(".time_stack." in k for k in keys),
    }
