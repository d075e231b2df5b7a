"""Random-weight files of the Qwen-Image and Z-Image families in ComfyUI's key layouts (see _random_weights).

Widths are the released models' (detection and ComfyUI's loaders read them);
depth is cut to what detection counts from the keys: one transformer block,
one LLM layer, one vision block, one refiner of each kind. Files are written
once into the repository's ``.cache`` and reused; the version in each name
changes when a recipe does.

| file | what | size |
| --- | --- | --- |
| qwen_image_fp8_e4m3fn | Qwen-Image transformer, 1 block, fp8 Linear weights | ~0.4 GB |
| qwen_image_bf16 | the same in bf16 | ~0.8 GB |
| qwen_2.5_vl_7b_fp8_scaled | Qwen2.5-VL 7B, 1 layer + 1 vision block, scaled fp8 | ~1.4 GB |
| qwen_image_vae | the Wan 2.1 VAE, full | ~0.25 GB |
| qwen_image_vae_dim16 | the same at 16 base channels (the server tests) | ~10 MB |
| z_image_turbo_bf16 | Z-Image transformer, 1 layer + 1 + 1 refiners, bf16 | ~1.1 GB |
| qwen_3_4b | Qwen3 4B, 1 layer, bf16 | ~1.0 GB |
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _random_weights import cached_file, fp8_state_dict, link, module_shapes, random_state_dict

from comfy_kernel_core_nodes.components.llm.decoder import QWEN3_4B, QWEN25_7B, DecoderLM
from comfy_kernel_core_nodes.components.llm.qwen_vision import QWEN25_VL_VISION
from comfy_kernel_core_nodes.components.wan_vae import WanVAE
from comfy_kernel_core_nodes.families.lumina2.nextdit import Z_IMAGE, NextDiT
from comfy_kernel_core_nodes.families.qwen_image.text import QwenVLEncoder
from comfy_kernel_core_nodes.families.qwen_image.transformer import QwenImageConfig, QwenImageTransformer
from comfy_kernel_core_nodes.model import ops

VERSION = "v1"


def _shapes(build) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return module_shapes(build())


def qwen_image_transformer_sd(dtype: torch.dtype = torch.bfloat16, seed: int = 1) -> dict[str, torch.Tensor]:
    return random_state_dict(_shapes(lambda: QwenImageTransformer(QwenImageConfig(num_layers=1))), seed, dtype)


def qwen_image_fp8() -> Path:
    return cached_file(f"{VERSION}-qwen_image_fp8_e4m3fn.safetensors",
                       lambda: fp8_state_dict(qwen_image_transformer_sd()))


def qwen_image_bf16() -> Path:
    return cached_file(f"{VERSION}-qwen_image_bf16.safetensors", qwen_image_transformer_sd)


def _not_embedding(key: str) -> bool:
    return "embed_tokens" in key


def qwen25_vl_fp8_scaled() -> Path:
    def make() -> dict[str, torch.Tensor]:
        config = replace(QWEN25_7B, num_layers=1)
        vision = replace(QWEN25_VL_VISION, num_layers=1)
        shapes = _shapes(lambda: QwenVLEncoder(config, vision, ops.plain, None))
        return fp8_state_dict(random_state_dict(shapes, 2, torch.bfloat16), scaled=True, skip=_not_embedding)

    return cached_file(f"{VERSION}-qwen_2.5_vl_7b_fp8_scaled.safetensors", make)


def wan21_vae() -> Path:
    return cached_file(f"{VERSION}-qwen_image_vae.safetensors",
                       lambda: random_state_dict(_shapes(lambda: WanVAE()), 3, torch.bfloat16))


def wan21_vae_narrow() -> Path:
    """The Wan 2.1 VAE at a sixth of its width (16 base channels; the loader reads the width from the file):
    the Edit encoders VAE-encode their reference at about a megapixel, which takes minutes at full width."""
    return cached_file(f"{VERSION}-qwen_image_vae_dim16.safetensors",
                       lambda: random_state_dict(_shapes(lambda: WanVAE(dim=16)), 3, torch.bfloat16))


def z_image_sd(dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    config = replace(Z_IMAGE, n_layers=1, n_refiner_layers=1)
    return random_state_dict(_shapes(lambda: NextDiT(config)), 4, dtype)


def z_image_bf16() -> Path:
    return cached_file(f"{VERSION}-z_image_turbo_bf16.safetensors", z_image_sd)


def qwen3_4b() -> Path:
    return cached_file(f"{VERSION}-qwen_3_4b.safetensors", lambda: random_state_dict(
        _shapes(lambda: DecoderLM(replace(QWEN3_4B, num_layers=1))), 5, torch.bfloat16))


def place(path: Path, folder: Path, name: str) -> Path:
    """Hard-link (or copy) a cached file into a server's model folder under the name a workflow expects.

    Not a symlink: the folder registry refuses links that lead outside the folder.
    """
    return link(path, folder / name)


def instantx_controlnet_sd(dtype: torch.dtype = torch.bfloat16, seed: int = 5, blocks: int = 1,
                           **config: Any) -> dict[str, torch.Tensor]:
    """An InstantX Qwen-Image ControlNet (diffusers' names) of ``blocks`` full-width blocks, random weights."""
    from comfy_kernel_core_nodes.families.qwen_image.controlnet import QwenImageControlNet

    return random_state_dict(_shapes(lambda: QwenImageControlNet(QwenImageConfig(num_layers=blocks, **config), 64)),
                             seed, dtype)


def instantx_controlnet() -> Path:
    return cached_file(f"{VERSION}-qwen_image_instantx_controlnet.safetensors", instantx_controlnet_sd)
