"""Recognising HiDream files from their tensor names and shapes: the transformer and Llama 3.1 8B.

ComfyUI knows one HiDream layout (16 + 32 blocks, 20 heads of 128, 4096-wide
text states) and fixes every number; here the numbers are read from the shapes,
which gives the same configuration for the released files and also loads
reduced ones (fewer blocks, heads or experts, narrower text states).
"""

from __future__ import annotations

import re
from typing import Any

from ...model.detection import Shapes, count

#: where files keep Llama 3.1: bare, ComfyUI's model keys, inside checkpoints
LLAMA_PREFIXES = ("", "llama.transformer.", "text_encoders.llama.transformer.")
LLAMA3_VOCAB = 128256
HEAD_DIM = 128


def transformer_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """ComfyUI's ``unet_config`` of a HiDream transformer under ``prefix`` (``image_model`` "hidream"), or None."""
    if prefix + "caption_projection.0.linear.weight" not in shapes \
            or prefix + "x_embedder.proj.weight" not in shapes:
        return None
    esc = re.escape(prefix)
    double = count(shapes, esc + r"double_stream_blocks\.(\d+)\.")
    single = count(shapes, esc + r"single_stream_blocks\.(\d+)\.")
    projections = count(shapes, esc + r"caption_projection\.(\d+)\.")
    inner, patch_in = shapes[prefix + "x_embedder.proj.weight"]
    block = "double_stream_blocks.0.block." if double else "single_stream_blocks.0.block."
    experts = count(shapes, esc + re.escape(block) + r"ff_i\.experts\.(\d+)\.")
    out = int(shapes[prefix + "final_layer.linear.weight"][0])
    return {
        "image_model": "hidream",
        "patch_size": 2,
        "in_channels": int(patch_in) // 4,
        "out_channels": out // 4,
        "num_layers": double,
        "num_single_layers": single,
        "attention_head_dim": HEAD_DIM,
        "num_attention_heads": int(inner) // HEAD_DIM,
        "caption_channels": [int(shapes[f"{prefix}caption_projection.{projections - 1}.linear.weight"][1]),
                             int(shapes[prefix + "caption_projection.0.linear.weight"][1])],
        "text_emb_dim": int(shapes[prefix + "p_embedder.pooled_embedder.linear_1.weight"][1]),
        "num_routed_experts": experts,
        "num_activated_experts": 2,
        "axes_dims_rope": [64, 32, 32],
        "max_resolution": [128, 128],
    }


def llama3_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps a Llama 3 language model (Llama 3's vocabulary, no q/k/v biases or q/k norms)."""
    for prefix in LLAMA_PREFIXES:
        embed = shapes.get(prefix + "model.embed_tokens.weight")
        if embed is None or embed[0] != LLAMA3_VOCAB:
            continue
        layer = prefix + "model.layers.0."
        if layer + "post_attention_layernorm.weight" in shapes and layer + "self_attn.k_proj.bias" not in shapes \
                and layer + "self_attn.q_norm.weight" not in shapes \
                and layer + "post_feedforward_layernorm.weight" not in shapes:
            return prefix
    return None
