"""Recognising Qwen-Image files from their tensor names and shapes: the transformer, Qwen2.5-VL, the Wan VAE."""

from __future__ import annotations

import re
from typing import Any

from ...model.detection import Shapes, count

#: where files keep the Qwen2.5-VL 7B text encoder (standalone, ComfyUI's multi-encoder names, checkpoints)
QWEN25_PREFIXES = ("", "qwen25_7b.transformer.", "text_encoders.qwen25_7b.transformer.")
WAN_VAE_PREFIXES = ("", "vae.", "first_stage_model.")


def transformer_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """ComfyUI's ``unet_config`` of a Qwen-Image transformer under ``prefix``, or None."""
    if prefix + "txt_norm.weight" not in shapes or prefix + "img_in.weight" not in shapes \
            or prefix + "transformer_blocks.0.attn.add_q_proj.weight" not in shapes:
        return None
    config: dict[str, Any] = {
        "image_model": "qwen_image",
        "in_channels": int(shapes[prefix + "img_in.weight"][1]),
        "num_layers": count(shapes, re.escape(prefix) + r"transformer_blocks\.(\d+)\."),
        "inner_dim": int(shapes[prefix + "img_in.weight"][0]),
        "joint_attention_dim": int(shapes[prefix + "txt_norm.weight"][0]),
        "out_channels": int(shapes[prefix + "proj_out.weight"][0]) // 4 if prefix + "proj_out.weight" in shapes
        else 16,
    }
    if prefix + "__index_timestep_zero__" in shapes:
        config["default_ref_method"] = "index_timestep_zero"
    if prefix + "time_text_embed.addition_t_embedding.weight" in shapes:
        config["use_additional_t_cond"] = True
    return config


def qwen25_7b_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps Qwen2.5-VL 7B's language model (k/v width 512 with biases, width 3584)."""
    for prefix in QWEN25_PREFIXES:
        k_bias = shapes.get(prefix + "model.layers.0.self_attn.k_proj.bias")
        norm = shapes.get(prefix + "model.norm.weight")
        if k_bias is not None and k_bias[0] == 512 and norm is not None and norm[0] == 3584:
            return prefix
    return None


def is_wan21_vae(shapes: Shapes, prefix: str) -> bool:
    """The Wan 2.1 VAE (Qwen-Image's): causal 3-d convolutions, 16 latent channels, RMS-normed blocks."""
    conv = shapes.get(prefix + "decoder.conv1.weight")
    return conv is not None and len(conv) == 5 and conv[1] == 16 \
        and prefix + "decoder.middle.0.residual.0.gamma" in shapes and prefix + "encoder.conv1.weight" in shapes
