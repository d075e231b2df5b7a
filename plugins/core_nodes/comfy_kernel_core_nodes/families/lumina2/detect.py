"""Recognising Lumina 2 / Z-Image files: the NextDiT transformer and the Gemma 2 2B / Qwen3 4B text encoders."""

from __future__ import annotations

import re
from typing import Any

from ...model.detection import Shapes, count

QWEN3_4B_PREFIXES = ("", "qwen3_4b.transformer.", "text_encoders.qwen3_4b.transformer.")


def transformer_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """ComfyUI's ``unet_config`` of a NextDiT under ``prefix`` (Lumina 2 at width 2304, Z-Image at 3840)."""
    cap = shapes.get(prefix + "cap_embedder.1.weight")
    if cap is None or prefix + "layers.0.attention.qkv.weight" not in shapes \
            or prefix + "layers.0.attention.k_norm.weight" not in shapes:
        return None
    dim, cap_dim = int(cap[0]), int(cap[1])
    head_dim = int(shapes[prefix + "layers.0.attention.q_norm.weight"][0])
    heads = dim // head_dim
    kv_heads = (int(shapes[prefix + "layers.0.attention.qkv.weight"][0]) // head_dim - heads) // 2
    z_image = prefix + "layers.0.adaLN_modulation.0.weight" in shapes
    config: dict[str, Any] = {
        "image_model": "lumina2", "dim": dim, "cap_feat_dim": cap_dim, "n_heads": heads, "n_kv_heads": kv_heads,
        "n_layers": count(shapes, re.escape(prefix) + r"layers\.(\d+)\."),
        "n_refiner_layers": count(shapes, re.escape(prefix) + r"noise_refiner\.(\d+)\."),
        "ffn_hidden": int(shapes[prefix + "layers.0.feed_forward.w1.weight"][0]),
        "in_channels": int(shapes[prefix + "x_embedder.weight"][1]) // 4,
        "t_hidden": int(shapes[prefix + "t_embedder.mlp.0.weight"][0]),
        "z_image_modulation": z_image,
    }
    if z_image:
        config.update(axes_dims=(32, 48, 48), rope_theta=256.0, time_scale=1000.0)
        if prefix + "cap_pad_token" in shapes:
            config["pad_tokens_multiple"] = 32
    else:
        config.update(axes_dims=(32, 32, 32), rope_theta=10000.0, time_scale=1.0)
    return config


def qwen3_4b_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps Qwen3 4B (q/k norms, width 2560), Z-Image's text encoder."""
    for prefix in QWEN3_4B_PREFIXES:
        q_norm = shapes.get(prefix + "model.layers.0.self_attn.q_norm.weight")
        norm = shapes.get(prefix + "model.layers.0.post_attention_layernorm.weight")
        if q_norm is not None and norm is not None and norm[0] == 2560:
            return prefix
    return None


def gemma2_2b_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps Gemma 2 2B (Lumina-Image 2.0's text encoder)."""
    for prefix in ("", "gemma2_2b.transformer.", "text_encoders.gemma2_2b.transformer."):
        norm = shapes.get(prefix + "model.layers.0.post_feedforward_layernorm.weight")
        if norm is not None and norm[0] == 2304:
            return prefix
    return None
