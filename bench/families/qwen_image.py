"""Qwen-Image for ``txt2img.py --family qwen_image``: the real transformer width (3072, 24 heads), fewer blocks.

The released model has 60 blocks; this one has ``BLOCKS`` (per-step time
scales about linearly with the block count, so the full model's step is
roughly ``FULL_SCALE`` times the one measured). The text encoder is Qwen2.5-VL
7B at its real width with 2 layers and one vision block (it runs once per
prompt); the VAE is the full Wan 2.1 VAE. Random bf16 weights, written once into
the benchmark's temporary model folders; the graph is the frontend template's
shape (ModelSamplingAuraFlow shift 3.1, EmptySD3LatentImage, cfg 2.5).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .flux import _random, _shapes

BLOCKS = 2
FULL_SCALE = 60 / BLOCKS


def prepare(base: Path) -> None:
    """Write the diffusion model, text encoder and VAE under ``base/models``."""
    import torch
    from safetensors.torch import save_file

    from comfy_kernel_core_nodes.components.llm.decoder import QWEN25_7B
    from comfy_kernel_core_nodes.components.llm.qwen_vision import QWEN25_VL_VISION
    from comfy_kernel_core_nodes.components.wan_vae import WanVAE
    from comfy_kernel_core_nodes.families.qwen_image.text import QwenVLEncoder
    from comfy_kernel_core_nodes.families.qwen_image.transformer import QwenImageConfig, QwenImageTransformer
    from comfy_kernel_core_nodes.model import ops

    with torch.device("meta"):
        parts = {
            "diffusion_models/qwen-image-bench.safetensors": QwenImageTransformer(QwenImageConfig(num_layers=BLOCKS)),
            "text_encoders/qwen_2.5_vl_7b-2layers.safetensors": QwenVLEncoder(
                replace(QWEN25_7B, num_layers=2), replace(QWEN25_VL_VISION, num_layers=1), ops.plain, None),
            "vae/qwen_image_vae.safetensors": WanVAE(),
        }
    for name, module in parts.items():
        path = base / "models" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(_random(_shapes(module), torch.bfloat16), str(path))


def prompt(size: int, steps: int) -> dict[str, Any]:
    """The Qwen-Image template's shape, with the node ids txt2img.py reads (5 KSampler, 6 decode, 7 save)."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "qwen-image-bench.safetensors",
                                                     "weight_dtype": "default"}},
        "8": {"class_type": "CLIPLoader", "inputs": {"clip_name": "qwen_2.5_vl_7b-2layers.safetensors",
                                                     "type": "qwen_image", "device": "default"}},
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": "qwen_image_vae.safetensors"}},
        "10": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["1", 0], "shift": 3.1}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": "a photo of a cat"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": ""}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["10", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 0,
            "steps": steps, "cfg": 2.5, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["9", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }
