"""Reading an MMDiT's layout from its keys (SD3 Medium, SD3.5 Medium and Large).

As ComfyUI does: the depth is the width / 64 (one 64-channel head per
block), the patch size and channels come from ``x_embedder.proj``, the
position table's side from ``pos_embed``; ``ln_q`` marks SD3.5's q/k norms
and each ``x_block.attn2`` one of SD3.5 Medium's extra attention layers.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ...model.detection import Shapes

_ATTN2 = re.compile(r"joint_blocks\.(\d+)\.x_block\.attn2\.qkv\.weight$")


def mmdit_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """ComfyUI-style ``unet_config`` of the MMDiT under ``prefix``, or None."""
    if prefix + "joint_blocks.0.context_block.attn.qkv.weight" not in shapes:
        return None
    proj = shapes.get(prefix + "x_embedder.proj.weight")
    if proj is None:
        return None
    hidden, in_channels, patch = int(proj[0]), int(proj[1]), int(proj[2])
    config: dict[str, Any] = {
        "image_model": "mmdit",
        "in_channels": in_channels,
        "patch_size": patch,
        "depth": hidden // 64,
        "input_size": None,
        "pos_embed_scaling_factor": None,
        "qkv_bias": prefix + "joint_blocks.0.x_block.attn.qkv.bias" in shapes,
    }
    final = shapes.get(prefix + "final_layer.linear.weight")
    if final is not None:
        config["out_channels"] = int(final[0]) // (patch * patch)
    y = shapes.get(prefix + "y_embedder.mlp.0.weight")
    if y is not None:
        config["adm_in_channels"] = int(y[1])
    context = shapes.get(prefix + "context_embedder.weight")
    if context is not None:
        config["context_embedder_config"] = {"target": "torch.nn.Linear",
                                             "params": {"in_features": int(context[1]),
                                                        "out_features": int(context[0])}}
    pos = shapes.get(prefix + "pos_embed")
    if pos is not None:
        config["num_patches"] = int(pos[1])
        config["pos_embed_max_size"] = round(math.sqrt(int(pos[1])))
    if prefix + "joint_blocks.0.context_block.attn.ln_q.weight" in shapes:
        config["qk_norm"] = "rms"
    layers = []
    for key in shapes:
        if key.startswith(prefix) and (m := _ATTN2.match(key[len(prefix):])):
            layers.append(int(m.group(1)))
    config["x_block_self_attn_layers"] = sorted(layers)
    return config
