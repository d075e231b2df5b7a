"""Reading a Flux-style transformer's layout from its keys (Flux.1 dev/schnell/Fill/Kontext, Chroma).

The original (Black Forest Labs) key layout: ``img_in``, ``txt_in``,
``time_in``, ``vector_in``, ``guidance_in``, ``double_blocks.N``,
``single_blocks.N``, ``final_layer``; Chroma replaces the per-block modulation
by ``distilled_guidance_layer`` (its approximator) and has no ``vector_in``.
Widths and depths come from the shapes (heads of 128 channels), so fine-tunes
and pruned variants are recognised as well as the full models.
"""

from __future__ import annotations

import re
from typing import Any

from ...model.detection import Shapes

HEAD_DIM = 128


def _count(shapes: Shapes, prefix: str) -> int:
    rx = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({int(m.group(1)) for k in shapes if (m := rx.match(k))})


def flux_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """ComfyUI-style ``unet_config`` of the Flux-style transformer under ``prefix``, or None."""
    if prefix + "double_blocks.0.img_attn.norm.key_norm.scale" not in shapes:
        return None
    if prefix + "img_in.weight" not in shapes or prefix + "double_blocks.0.img_mod.lin.weight" not in shapes \
            and prefix + "distilled_guidance_layer.in_proj.weight" not in shapes:
        return None
    if prefix + "double_stream_modulation_img.lin.weight" in shapes:  # Flux.2: its own detector
        return None
    hidden, in_features = shapes[prefix + "img_in.weight"]
    patch = 2
    config: dict[str, Any] = {
        "image_model": "flux",
        "in_channels": int(in_features) // (patch * patch),
        "out_channels": int(shapes[prefix + "final_layer.linear.weight"][0]) // (patch * patch),
        "patch_size": patch,
        "context_in_dim": int(shapes[prefix + "txt_in.weight"][1]),
        "hidden_size": int(hidden),
        "mlp_ratio": shapes[prefix + "double_blocks.0.img_mlp.0.weight"][0] / hidden,
        "num_heads": int(hidden) // HEAD_DIM,
        "depth": _count(shapes, prefix + "double_blocks."),
        "depth_single_blocks": _count(shapes, prefix + "single_blocks."),
        "axes_dim": (16, 56, 56),
        "theta": 10000,
        "qkv_bias": prefix + "double_blocks.0.img_attn.qkv.bias" in shapes,
    }
    if prefix + "distilled_guidance_layer.in_proj.weight" in shapes:
        out_dim, in_dim = shapes[prefix + "distilled_guidance_layer.out_proj.weight"][0], \
            shapes[prefix + "distilled_guidance_layer.in_proj.weight"][1]
        config.update(image_model="chroma", in_dim=int(in_dim), out_dim=int(out_dim),
                      hidden_dim=int(shapes[prefix + "distilled_guidance_layer.in_proj.weight"][0]),
                      n_layers=_count(shapes, prefix + "distilled_guidance_layer.layers."),
                      guidance_embed=False)
        return config
    config["vec_in_dim"] = int(shapes[prefix + "vector_in.in_layer.weight"][1])
    config["guidance_embed"] = prefix + "guidance_in.in_layer.weight" in shapes
    return config


def flux_any_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """:func:`flux_config` of the original layout, or of a Flux.1 file in diffusers' layout."""
    from .diffusers_layout import detect

    return flux_config(shapes, prefix) or detect(shapes, prefix)


def flux2_config(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """``unet_config`` of a Flux.2 transformer (shared ``*_stream_modulation`` layers) under ``prefix``, or None."""
    if prefix + "double_stream_modulation_img.lin.weight" not in shapes or prefix + "img_in.weight" not in shapes:
        return None
    hidden, in_channels = shapes[prefix + "img_in.weight"]
    return {
        "image_model": "flux2",
        "in_channels": int(in_channels),
        "out_channels": int(shapes[prefix + "final_layer.linear.weight"][0]),
        "patch_size": 1,
        "context_in_dim": int(shapes[prefix + "txt_in.weight"][1]),
        "hidden_size": int(hidden),
        "mlp_ratio": shapes[prefix + "double_blocks.0.img_mlp.2.weight"][1] / hidden,
        "num_heads": int(hidden) // HEAD_DIM,
        "depth": _count(shapes, prefix + "double_blocks."),
        "depth_single_blocks": _count(shapes, prefix + "single_blocks."),
        "axes_dim": (32, 32, 32, 32),
        "theta": 2000,
        "qkv_bias": False,
        "guidance_embed": prefix + "guidance_in.in_layer.weight" in shapes,
    }
