"""Recognising HunyuanVideo 1.5 files from their tensor names and shapes: the transformer and the VAE."""

from __future__ import annotations

import re
from typing import Any

from ...model.detection import Shapes
from ..qwen_image.detect import count


def _has(shapes: Shapes, prefix: str, *names: str) -> bool:
    return any(prefix + name in shapes for name in names)


def transformer_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """ComfyUI's ``unet_config`` of a HunyuanVideo-layout transformer (``image_model`` "hunyuan_video"), or None.

    Reads both the original checkpoints' names and ComfyUI's; only 1.5's models (with ``vision_in``)
    have a model config here.
    """
    if prefix + "txt_in.individual_token_refiner.blocks.0.norm1.weight" not in shapes \
            or prefix + "img_in.proj.weight" not in shapes:
        return None
    in_w = shapes[prefix + "img_in.proj.weight"]
    patch = [int(d) for d in in_w[2:]]
    hidden = int(in_w[0])
    patch_volume = 1
    for d in patch:
        patch_volume *= d
    vision = shapes.get(prefix + "vision_in.proj.0.weight")
    byt5 = shapes.get(prefix + "byt5_in.fc1.weight")
    return {
        "image_model": "hunyuan_video",
        "in_channels": int(in_w[1]),
        "patch_size": patch,
        "out_channels": int(shapes[prefix + "final_layer.linear.weight"][0]) // patch_volume,
        "vec_in_dim": 768 if any(k.startswith(prefix + "vector_in.") for k in shapes) else None,
        "axes_dim": [64, 64] if len(patch) == 2 else [16, 56, 56],
        "meanflow": any(k.startswith(prefix + "time_r_in.") for k in shapes),
        "context_in_dim": int(shapes[prefix + "txt_in.input_embedder.weight"][1]),
        "hidden_size": hidden,
        "mlp_ratio": 4.0,
        "num_heads": hidden // 128,
        "depth": count(shapes, re.escape(prefix) + r"double_blocks\.(\d+)\."),
        "depth_single_blocks": count(shapes, re.escape(prefix) + r"single_blocks\.(\d+)\."),
        "theta": 256,
        "qkv_bias": True,
        "byt5": byt5 is not None,
        "byt5_dim": int(byt5[1]) if byt5 is not None else 1472,
        "guidance_embed": any(k.startswith(prefix + "guidance_in.") for k in shapes),
        "use_cond_type_embedding": prefix + "cond_type_embedding.weight" in shapes,
        "vision_in_dim": int(vision[0]) if vision is not None else None,
    }


def is_vae(shapes: Shapes, prefix: str) -> bool:
    """The HunyuanVideo 1.5 VAE: causal 3-d convolutions (``conv_in.conv``), 32 latent channels, RMS-norm gains."""
    conv = shapes.get(prefix + "decoder.conv_in.conv.weight")
    return conv is not None and len(conv) == 5 and conv[1] == 32 \
        and _has(shapes, prefix, "decoder.mid.attn_1.norm.gamma") \
        and _has(shapes, prefix, "encoder.down.0.block.0.conv1.conv.weight")
