"""Flux.1 dev for ``txt2img.py --family flux``: the real transformer width (3072, 24 heads), fewer blocks.

The full model has 19 double and 38 single blocks; this one has ``DOUBLE`` and
``SINGLE`` (per-step time scales about linearly with the block count, so the
full model's step is roughly ``FULL_SCALE`` times the one measured). The text
encoders are a full CLIP-L and a 2-layer T5 of the real width (T5-XXL runs once
per prompt, not per step); the VAE is the real 16-channel autoencoder. Random
bf16 weights, written once into the benchmark's temporary model folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DOUBLE, SINGLE = 1, 2
FULL_SCALE = (19 * 2 + 38) / (DOUBLE * 2 + SINGLE)  # a double block costs about two single ones


def _random(shapes: dict[str, tuple[int, ...]], dtype: Any) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    out = {}
    for key, shape in shapes.items():
        if len(shape) >= 2:
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            out[key] = (torch.randn(shape, generator=g) / fan_in ** 0.5).to(dtype)
        elif key.endswith(("scale", "norm.weight")) or "norm" in key and key.endswith("weight"):
            out[key] = torch.ones(shape, dtype=dtype)
        else:
            out[key] = (0.01 * torch.randn(shape, generator=g)).to(dtype)
    return out


def _shapes(module: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def prepare(base: Path) -> None:
    """Write the diffusion model, text encoders and VAE under ``base/models``."""
    import torch
    from safetensors.torch import save_file

    from comfy_kernel_core_nodes.components.clip.text_model import CLIPTextModel
    from comfy_kernel_core_nodes.components.kl_vae import AutoencoderKL
    from comfy_kernel_core_nodes.components.t5 import T5Config, T5Encoder
    from comfy_kernel_core_nodes.families.flux.model import Flux, FluxParams

    with torch.device("meta"):
        parts = {
            "diffusion_models/flux-bench.safetensors": (Flux(FluxParams(depth=DOUBLE, depth_single_blocks=SINGLE)),
                                                        torch.bfloat16),
            "text_encoders/clip_l.safetensors": (CLIPTextModel(), torch.float16),
            "text_encoders/t5xxl-2layers.safetensors": (T5Encoder(T5Config(layers=2)), torch.float16),
            "vae/ae.safetensors": (AutoencoderKL(latent_channels=16, use_quant_conv=False), torch.float32),
        }
    for name, (module, dtype) in parts.items():
        path = base / "models" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(_random(_shapes(module), dtype), str(path))


def prompt(size: int, steps: int) -> dict[str, Any]:
    """Flux dev's template shape, with the node ids txt2img.py reads (5 KSampler, 6 decode, 7 save)."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux-bench.safetensors", "weight_dtype": "default"}},
        "8": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                         "clip_name2": "t5xxl-2layers.safetensors", "type": "flux"}},
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": "a photo of a cat"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": ""}},
        "10": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["2", 0], "guidance": 3.5}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["10", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 0,
            "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["9", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }
