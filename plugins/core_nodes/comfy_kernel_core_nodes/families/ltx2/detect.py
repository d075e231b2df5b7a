"""Recognising LTX-2 files from their tensor names and shapes: the video VAE, the audio VAE, the transformer."""

from __future__ import annotations

import re
from typing import Any

from ...model.detection import Shapes, count


def is_video_vae(shapes: Shapes, prefix: str) -> bool:
    """The LTX-2 video VAE: 4x4-patchified pixels (48 channels in), residual-shortcut downsamplers, no
    timestep-conditioned decoder (which marks the LTX-Video 0.9 VAEs)."""
    conv_in = shapes.get(prefix + "encoder.conv_in.conv.weight")
    return conv_in is not None and len(conv_in) == 5 and conv_in[1] == 48 \
        and prefix + "encoder.down_blocks.1.conv.conv.weight" in shapes \
        and prefix + "decoder.up_blocks.0.res_blocks.0.conv1.conv.weight" in shapes \
        and prefix + "per_channel_statistics.mean-of-means" in shapes \
        and prefix + "decoder.last_scale_shift_table" not in shapes


#: where the released checkpoints keep the audio autoencoder and the vocoder
AUDIO_PREFIX = "audio_vae."
VOCODER_PREFIX = "vocoder."


def is_audio_vae(shapes: Shapes, prefix: str = "") -> bool:
    """A file with LTX-2's audio autoencoder (causal 2-d convolutions) and its vocoder at the top level (LTX-2.3's
    nested beside its bandwidth extender)."""
    vocoder = VOCODER_PREFIX + ("vocoder." if VOCODER_PREFIX + "bwe_generator.conv_pre.weight" in shapes else "")
    return prefix == "" and AUDIO_PREFIX + "decoder.conv_in.conv.weight" in shapes \
        and AUDIO_PREFIX + "per_channel_statistics.mean-of-means" in shapes \
        and vocoder + "conv_pre.weight" in shapes and vocoder + "ups.0.weight" in shapes


#: ComfyUI reads LTX-2's head counts as 32 per stream (head width = stream width / 32)
HEADS = 32


def transformer_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """ComfyUI's ``unet_config`` of an LTX-2 audio-video transformer (``image_model`` "ltxav"), or None.

    LTX-Video 0.9 files (no audio stream) are not recognised here. LTX-2.3's additions are read from the keys:
    ``gated_attention`` (per-head gates), ``prompt_modulation`` and ``prompt_adaln`` (text modulation and its
    timestep embedding), no ``caption_channels`` (no caption projection) and the ``connector`` the diffusion
    model runs; LTX-2.5's video feed-forward without biases (``ff_bias``) and ``keyframes_abs_pos_embedding``.
    """
    if prefix + "audio_adaln_single.linear.weight" not in shapes or prefix + "patchify_proj.weight" not in shapes:
        return None
    patchify, audio_patchify = shapes[prefix + "patchify_proj.weight"], shapes[prefix + "audio_patchify_proj.weight"]
    block = prefix + "transformer_blocks.0."
    to_k = shapes[block + "attn2.to_k.weight"]
    audio_q = shapes[block + "audio_attn1.to_q.weight"]
    caption = shapes.get(prefix + "caption_projection.linear_1.weight")
    config: dict[str, Any] = {
        "image_model": "ltxav",
        "in_channels": int(patchify[1]),
        "out_channels": int(shapes[prefix + "proj_out.weight"][0]),
        "num_attention_heads": HEADS,
        "attention_head_dim": int(to_k[0]) // HEADS,
        "cross_attention_dim": int(to_k[1]),
        "audio_in_channels": int(audio_patchify[1]),
        "audio_out_channels": int(shapes[prefix + "audio_proj_out.weight"][0]),
        "audio_num_attention_heads": HEADS,
        "audio_attention_head_dim": int(audio_q[0]) // HEADS,
        "audio_cross_attention_dim": int(shapes[block + "audio_attn2.to_k.weight"][1]),
        "caption_channels": int(caption[1]) if caption is not None else None,
        "num_layers": count(shapes, re.escape(prefix) + r"transformer_blocks\.(\d+)\."),
        "gated_attention": block + "attn1.to_gate_logits.weight" in shapes,
        "prompt_modulation": block + "prompt_scale_shift_table" in shapes,
        "prompt_adaln": prefix + "prompt_adaln_single.linear.weight" in shapes,
        "ff_bias": block + "ff.net.0.proj.bias" in shapes,
        "audio_ff_bias": block + "audio_ff.net.0.proj.bias" in shapes,
        "keyframes_abs_pos_embedding": prefix + "keyframes_abs_pos_embedding" in shapes,
    }
    if caption is None:
        config["connector"] = connector_config(shapes, prefix)
    return config


def connector_config(shapes: Shapes, prefix: str) -> dict[str, Any] | None:
    """The text connectors a diffusion model without a caption projection (LTX-2.3) keeps: depth, registers,
    heads (from the gates' width; else heads of 128) and whether their attention is gated."""
    stem = prefix + "{}_embeddings_connector."
    first = stem.format("video") + "transformer_1d_blocks.0.attn1."
    if first + "to_q.weight" not in shapes:
        return None
    gates = {name: shapes.get(stem.format(name) + "transformer_1d_blocks.0.attn1.to_gate_logits.weight")
             for name in ("video", "audio")}
    return {"layers": count(shapes, re.escape(stem.format("video")) + r"transformer_1d_blocks\.(\d+)\."),
            "registers": int(shapes[stem.format("video") + "learnable_registers"][0]),
            "heads": int(gates["video"][0]) if gates["video"] is not None else 0,
            "audio_heads": int(gates["audio"][0]) if gates["audio"] is not None else 0,
            "gated": gates["video"] is not None}
