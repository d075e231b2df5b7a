"""Recognising LTX-Video 0.9 files from their tensor names and shapes: the transformer and the video VAE.

LTX-2 files share the transformer's names and the VAE's stem; the audio
stream (``audio_adaln_single``) marks an LTX-2 transformer, and an LTX-2 VAE
has neither a timestep-conditioned decoder nor strided-convolution
downsamplers, one of which every LTX-Video 0.9 VAE has.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ...model.detection import Shapes, count

#: ComfyUI reads LTX-Video's head count as 32 (head width = stream width / 32)
HEADS = 32
#: settings the released checkpoints' ``config`` metadata may give the transformer (ComfyUI reads them too)
TRANSFORMER_SETTINGS = ("causal_temporal_positioning", "positional_embedding_theta", "positional_embedding_max_pos",
                        "timestep_scale_multiplier")


def transformer_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """ComfyUI's ``unet_config`` of an LTX-Video 0.9 transformer (``image_model`` "ltxv"), or None."""
    if prefix + "adaln_single.emb.timestep_embedder.linear_1.bias" not in shapes \
            or prefix + "patchify_proj.weight" not in shapes \
            or prefix + "audio_adaln_single.linear.weight" in shapes:
        return None
    to_k = shapes[prefix + "transformer_blocks.0.attn2.to_k.weight"]
    return {
        "image_model": "ltxv",
        "in_channels": int(shapes[prefix + "patchify_proj.weight"][1]),
        "out_channels": int(shapes[prefix + "proj_out.weight"][0]),
        "num_attention_heads": HEADS,
        "attention_head_dim": int(to_k[0]) // HEADS,
        "cross_attention_dim": int(to_k[1]),
        "caption_channels": int(shapes.get(prefix + "caption_projection.linear_1.weight", (0, 4096))[1]),
        "num_layers": count(shapes, re.escape(prefix) + r"transformer_blocks\.(\d+)\."),
    }


def is_video_vae(shapes: Shapes, prefix: str) -> bool:
    """An LTX-Video 0.9 VAE: 4x4-patchified pixels in, per-channel statistics, and a timestep-conditioned decoder
    (0.9.1+) or strided-convolution downsamplers (0.9.0)."""
    conv_in = shapes.get(prefix + "encoder.conv_in.conv.weight")
    return conv_in is not None and len(conv_in) == 5 and conv_in[1] == 48 \
        and prefix + "decoder.conv_in.conv.weight" in shapes \
        and prefix + "per_channel_statistics.mean-of-means" in shapes \
        and (prefix + "decoder.last_scale_shift_table" in shapes
             or prefix + "encoder.down_blocks.1.conv.weight" in shapes)


def file_config(path: str) -> dict[str, Any]:
    """The ``config`` JSON a safetensors file keeps in its metadata (empty when there is none)."""
    from ...model.files import is_safetensors

    if not is_safetensors(path):
        return {}
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get("config")
        config = json.loads(raw) if raw else {}
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}
