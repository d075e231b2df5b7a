"""Recognising Wan files from their tensor names and shapes: the transformer, umt5-xxl, the Wan 2.2 VAE."""

from __future__ import annotations

import re
from typing import Any

from ...model.detection import Shapes, count

#: where files keep umt5-xxl: bare, ComfyUI's model keys, inside checkpoints
UMT5_PREFIXES = ("", "umt5xxl.transformer.", "text_encoders.umt5xxl.transformer.")


def transformer_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """ComfyUI's ``unet_config`` of a Wan transformer under ``prefix`` (``image_model`` "wan2.1"), or None."""
    if prefix + "head.modulation" not in shapes or prefix + "patch_embedding.weight" not in shapes:
        return None
    dim = int(shapes[prefix + "head.modulation"][-1])
    config: dict[str, Any] = {
        "image_model": "wan2.1",
        "dim": dim,
        "out_dim": int(shapes[prefix + "head.head.weight"][0]) // 4,
        "num_heads": dim // 128,
        "ffn_dim": int(shapes[prefix + "blocks.0.ffn.0.weight"][0]),
        "num_layers": count(shapes, re.escape(prefix) + r"blocks\.(\d+)\."),
        "patch_size": (1, 2, 2),
        "freq_dim": int(shapes[prefix + "time_embedding.0.weight"][1]),
        "text_dim": int(shapes[prefix + "text_embedding.0.weight"][1]),
        "in_dim": int(shapes[prefix + "patch_embedding.weight"][1]),
    }
    if prefix + "vace_patch_embedding.weight" in shapes:
        config["model_type"] = "vace"
        config["vace_in_dim"] = int(shapes[prefix + "vace_patch_embedding.weight"][1])
        config["vace_layers"] = count(shapes, re.escape(prefix) + r"vace_blocks\.(\d+)\.")
    elif prefix + "control_adapter.conv.weight" in shapes:
        config["model_type"] = "camera" if prefix + "img_emb.proj.0.bias" in shapes else "camera_2.2"
        # the adapter's convolution sees 8x8 pixel blocks of each embedding channel (24 in the released files)
        config["in_dim_control_adapter"] = int(shapes[prefix + "control_adapter.conv.weight"][1]) // 64
    elif prefix + "casual_audio_encoder.encoder.final_linear.weight" in shapes:
        config.update(model_type="s2v", **_s2v_config(shapes, prefix, dim))
    elif prefix + "audio_proj.audio_proj_glob_1.layer.bias" in shapes:
        config.update(model_type="humo", **_humo_config(shapes, prefix))
    elif prefix + "face_adapter.fuser_blocks.0.k_norm.weight" in shapes:
        config["model_type"] = "animate"
    else:
        config["model_type"] = "i2v" if prefix + "img_emb.proj.0.bias" in shapes else "t2v"
    ref_conv = shapes.get(prefix + "ref_conv.weight")
    if ref_conv is not None:
        config["in_dim_ref_conv"] = int(ref_conv[1])
    flf = shapes.get(prefix + "img_emb.emb_pos")
    if flf is not None:
        config["flf_pos_embed_token_number"] = int(flf[1])
    return config


def _s2v_config(shapes: Shapes, prefix: str, dim: int) -> dict[str, Any]:
    """The S2V model's audio widths, audio layer count, tokens per frame and injection blocks.

    ComfyUI fixes the blocks that inject audio (12 of the 40); which they are
    is not in the keys, so a file with fewer injectors takes the first ones of
    that list.
    """
    from .s2v import INJECT_LAYERS

    local = shapes[prefix + "casual_audio_encoder.encoder.conv1_local.conv.weight"]
    injectors = count(shapes, re.escape(prefix) + r"audio_injector\.injector\.(\d+)\.")
    cond = shapes.get(prefix + "cond_encoder.weight")
    return {"audio_dim": int(local[1]), "audio_layers": int(shapes[prefix + "casual_audio_encoder.weights"][1]),
            "audio_tokens": int(local[0]) // (dim // 4), "inject_layers": INJECT_LAYERS[:injectors],
            "cond_dim": int(cond[1]) if cond is not None else 0}


def _humo_config(shapes: Shapes, prefix: str) -> dict[str, Any]:
    """HuMo's Whisper width, audio projection width, audio token width and tokens per latent frame.

    ComfyUI fixes them (1280, 512, 1536, 16); they are read here so reduced
    files load. A file without the projection's weights gets the fixed sizes.
    """
    from .humo import AUDIO_GROUPS, AUDIO_WINDOW

    stem = prefix + "audio_proj.audio_proj_glob_"
    first, last, norm = (shapes.get(f"{stem}{name}.layer.weight") for name in ("1", "3", "norm"))
    if first is None or last is None or norm is None:
        return {}
    return {"audio_width": int(first[1]) // (AUDIO_WINDOW * AUDIO_GROUPS), "audio_hidden": int(first[0]),
            "audio_dim": int(norm[0]), "audio_tokens": int(last[0]) // int(norm[0])}


def umt5_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps umt5 (T5 with a relative position table in every layer), or None."""
    for prefix in UMT5_PREFIXES:
        if prefix + "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in shapes \
                and prefix + "encoder.final_layer_norm.weight" in shapes:
            return prefix
    return None


def is_wan22_vae(shapes: Shapes, prefix: str) -> bool:
    """The Wan 2.2 VAE: 48 latent channels, 2x2 patchified pixels, residual up/down blocks."""
    conv = shapes.get(prefix + "decoder.conv1.weight")
    return conv is not None and len(conv) == 5 and conv[1] == 48 \
        and prefix + "decoder.upsamples.0.upsamples.0.residual.2.weight" in shapes
