"""SD3 for ``txt2img.py --family sd3``: the SD3 Medium graph (UNETLoader, TripleCLIPLoader, ModelSamplingSD3).

An MMDiT's depth is its width / 64, so a smaller model is narrower as well:
``DEPTH`` (environment ``SD3_BENCH_DEPTH``, default 12: 768 wide, 12 heads)
is a half-size SD3 Medium; 24 is SD3 Medium (1536 wide), 38 SD3.5 Large.
The text encoders are a full CLIP-L and CLIP-G and a 2-layer T5 of the real
width (they run once per prompt, not per step); the VAE is the real
16-channel autoencoder. Random bf16 weights, written once into the
benchmark's temporary model folders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEPTH = int(os.environ.get("SD3_BENCH_DEPTH", "12"))


def prepare(base: Path) -> None:
    """Write the diffusion model, text encoders and VAE under ``base/models``."""
    import torch
    from safetensors.torch import save_file

    from comfy_kernel_core_nodes.components.clip.text_model import CLIP_G, CLIPTextModel
    from comfy_kernel_core_nodes.components.kl_vae import AutoencoderKL
    from comfy_kernel_core_nodes.components.t5 import T5Config, T5Encoder
    from comfy_kernel_core_nodes.families.sd3.mmdit import MMDiT, MMDiTParams

    from .flux import _random, _shapes

    with torch.device("meta"):
        parts = {
            "diffusion_models/sd3-bench.safetensors": (MMDiT(MMDiTParams(depth=DEPTH)), torch.bfloat16),
            "text_encoders/clip_l.safetensors": (CLIPTextModel(), torch.float16),
            "text_encoders/clip_g.safetensors": (CLIPTextModel(CLIP_G), torch.float16),
            "text_encoders/t5xxl-2layers.safetensors": (T5Encoder(T5Config(layers=2)), torch.float16),
            "vae/sd3_vae.safetensors": (AutoencoderKL(latent_channels=16, use_quant_conv=False), torch.float32),
        }
    for name, (module, dtype) in parts.items():
        path = base / "models" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = _random(_shapes(module), dtype)
        if name.endswith("clip_g.safetensors"):  # the file layout: text_model.*, the projection beside it
            tensors = {k if k == "text_projection.weight" else "text_model." + k: v for k, v in tensors.items()}
        save_file(tensors, str(path))


def prompt(size: int, steps: int) -> dict[str, Any]:
    """SD3 Medium's split-file graph, with the node ids txt2img.py reads (2, 3 prompts, 5 KSampler, 6 decode,
    7 save)."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "sd3-bench.safetensors", "weight_dtype": "default"}},
        "8": {"class_type": "TripleCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                           "clip_name2": "clip_g.safetensors",
                                                           "clip_name3": "t5xxl-2layers.safetensors"}},
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": "sd3_vae.safetensors"}},
        "10": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 3.0}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": "a photo of a cat"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": ""}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["10", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 0,
            "steps": steps, "cfg": 4.5, "sampler_name": "euler", "scheduler": "sgm_uniform", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["9", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }
