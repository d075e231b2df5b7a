"""Random-weight SD3 / SD3.5 files in ComfyUI's key layout, and diffusers as the MMDiT oracle.

The MMDiT's depth is its width / 64 (ComfyUI's detection), so the test
models are narrow and shallow together: 3 joint blocks of 192 channels, a
16 x 16 position table, the real 4096-wide context and 2048-wide pooled
inputs. CLIP-L and CLIP-G are full size (their detection checks the real
widths and depths; CLIP-G is written once into the test cache); T5 is small
(its layout is read from the keys).
"""

from __future__ import annotations

from pathlib import Path

import torch
from _flux import clip_l_state_dict, prefixed, t5_state_dict, vae16_state_dict
from _random_weights import cached_file, fp8_state_dict, module_shapes, random_state_dict

DEPTH = 3

VARIANTS = {
    "sd3_medium": {},
    "sd3.5_large": {"qk_norm": "rms"},
    "sd3.5_medium": {"qk_norm": "rms", "x_block_self_attn_layers": (0, 1)},
}


def mmdit_params(variant: str = "sd3_medium", **overrides):
    from comfy_kernel_core_nodes.families.sd3.mmdit import MMDiTParams

    base = dict(depth=DEPTH, pos_embed_max_size=16, **VARIANTS[variant])
    base.update(overrides)
    return MMDiTParams(**base)


def mmdit_state_dict(params, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.families.sd3.mmdit import MMDiT

    with torch.device("meta"):
        net = MMDiT(params)
    return random_state_dict(module_shapes(net), seed=seed, dtype=dtype)


def clip_g_state_dict(seed: int = 4, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """CLIP-G (OpenCLIP ViT-bigG's text tower) in the Hugging Face layout, as SD3's clip_g.safetensors."""
    from comfy_kernel_core_nodes.components.clip.text_model import CLIP_G, CLIPTextModel

    with torch.device("meta"):
        net = CLIPTextModel(CLIP_G)
    sd = random_state_dict(module_shapes(net), seed=seed, dtype=dtype)
    sd["embeddings.position_ids"] = torch.arange(77)[None]
    projection = sd.pop("text_projection.weight")
    return {**prefixed(sd, "text_model."), "text_projection.weight": projection}


def clip_g_file() -> Path:
    return cached_file("v2-sd3-clip_g.safetensors", clip_g_state_dict)


def checkpoint_file() -> Path:
    """A single-file SD3.5 checkpoint as sd3.5_large_fp8_scaled ships: scaled-fp8 MMDiT and T5, fp16 CLIPs."""
    def make() -> dict[str, torch.Tensor]:
        g = clip_g_state_dict()
        return {
            **prefixed(fp8_state_dict(mmdit_state_dict(mmdit_params("sd3.5_large"), seed=7, dtype=torch.bfloat16),
                                      scaled=True), "model.diffusion_model."),
            **prefixed(clip_l_state_dict(), "text_encoders.clip_l.transformer.text_model."),
            **prefixed(g, "text_encoders.clip_g.transformer."),
            **prefixed(fp8_state_dict(t5_state_dict(), scaled=True), "text_encoders.t5xxl.transformer."),
            **prefixed(vae16_state_dict(dtype=torch.float16), "first_stage_model."),
        }

    return cached_file("v2-sd3.5_large_fp8_scaled-tiny.safetensors", make)
