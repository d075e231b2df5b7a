"""Recognising ACE-Step 1.5 files from their tensor names and shapes: the DiT, the Qwen3 encoders, the audio VAE."""

from __future__ import annotations

import re
from typing import Any

from ...model.detection import Shapes, count
from .transformer import HEAD_DIM

#: the 5 Hz language model's vocabulary holds Qwen3's text tokens, then 64000 audio codes from this id on
AUDIO_CODE_START = 151669
QWEN3_PREFIXES = ("", "qwen3_06b.transformer.", "qwen3_2b.transformer.", "qwen3_4b.transformer.")
OOBLECK_PREFIXES = ("", "vae.", "first_stage_model.")


def transformer_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """ComfyUI's ``unet_config`` of an ACE-Step 1.5 file (``audio_model`` "ace1.5"), every width read from it."""
    proj_in = shapes.get(prefix + "decoder.proj_in.1.weight")
    if proj_in is None or prefix + "detokenizer.special_tokens" not in shapes \
            or prefix + "encoder.lyric_encoder.embed_tokens.weight" not in shapes:
        return None
    p = re.escape(prefix)

    def width(key: str, axis: int = 0) -> int:
        return int(shapes[prefix + key][axis])

    return {
        "audio_model": "ace1.5",
        "hidden_size": int(proj_in[0]),
        "in_channels": int(proj_in[1]),
        "patch_size": int(proj_in[2]),
        "out_channels": width("decoder.proj_out.1.weight", 1),
        "num_layers": count(shapes, p + r"decoder\.layers\.(\d+)\."),
        "num_heads": width("decoder.layers.0.self_attn.q_proj.weight") // HEAD_DIM,
        "num_kv_heads": width("decoder.layers.0.self_attn.k_proj.weight") // HEAD_DIM,
        "intermediate_size": width("decoder.layers.0.mlp.gate_proj.weight"),
        "encoder_hidden_size": width("encoder.lyric_encoder.embed_tokens.weight"),
        "encoder_intermediate_size": width("encoder.lyric_encoder.layers.0.mlp.gate_proj.weight"),
        "encoder_heads": width("encoder.lyric_encoder.layers.0.self_attn.q_proj.weight") // HEAD_DIM,
        "encoder_kv_heads": width("encoder.lyric_encoder.layers.0.self_attn.k_proj.weight") // HEAD_DIM,
        "text_hidden_dim": width("encoder.text_projector.weight", 1),
        "timbre_hidden_dim": width("encoder.timbre_encoder.embed_tokens.weight", 1),
        "lyric_layers": count(shapes, p + r"encoder\.lyric_encoder\.layers\.(\d+)\."),
        "timbre_layers": count(shapes, p + r"encoder\.timbre_encoder\.layers\.(\d+)\."),
        "tokenizer_layers": count(shapes, p + r"tokenizer\.attention_pooler\.layers\.(\d+)\."),
        "detokenizer_layers": count(shapes, p + r"detokenizer\.layers\.(\d+)\."),
        "pool_window": width("detokenizer.special_tokens", 1),
    }


def qwen3_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps a Qwen3 decoder (per-head q/k norms, no q/k/v biases), or None."""
    for prefix in QWEN3_PREFIXES:
        if prefix + "model.layers.0.self_attn.q_norm.weight" in shapes and prefix + "model.norm.weight" in shapes \
                and prefix + "model.layers.0.self_attn.k_proj.bias" not in shapes \
                and prefix + "model.embed_tokens.weight" in shapes:
            return prefix
    return None


def is_audio_lm(shapes: Shapes, prefix: str) -> bool:
    """The 5 Hz language model: a Qwen3 whose vocabulary goes on past the text tokens into audio codes."""
    return int(shapes[prefix + "model.embed_tokens.weight"][0]) > AUDIO_CODE_START + 1000


def is_ace15_vae(shapes: Shapes, prefix: str) -> bool:
    """The Oobleck audio VAE (snake activations, weight-normed 1-d convolutions) with ACE-Step 1.5's
    48 kHz strides: the first decoder block upsamples by 10 (a transposed convolution of kernel 20)."""
    up = shapes.get(prefix + "decoder.layers.1.layers.1.weight_v")
    return up is not None and prefix + "decoder.layers.1.layers.0.beta" in shapes and up[-1] == 20 \
        and prefix + "encoder.layers.0.weight_v" in shapes


def ace15_text_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps one of ACE-Step 1.5's Qwen3s: the 0.6B encoder (vocabulary cut to the 151669 text
    tokens) or the language model (text tokens and audio codes); other Qwen3s are not claimed."""
    prefix = qwen3_prefix(shapes)
    if prefix is None:
        return None
    vocab = int(shapes[prefix + "model.embed_tokens.weight"][0])
    return prefix if vocab == AUDIO_CODE_START or is_audio_lm(shapes, prefix) else None
