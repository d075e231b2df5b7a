"""Z-Image-Turbo for ``txt2img.py --family z_image``: the frontend's default graph at the real width, fewer layers.

The released transformer (dim 3840, 30 layers, 2 + 2 refiner layers) is cut
to ``LAYERS`` main layers and one refiner of each kind; the full model's step
is roughly ``FULL_SCALE`` times the one measured. The text encoder is Qwen3 4B
at its real width with 2 layers (it runs once per prompt); the VAE is the real
16-channel autoencoder (``ae.safetensors``). Random bf16 weights, written once
into the benchmark's temporary model folders; the graph is the default graph's
shape (ModelSamplingAuraFlow shift 3, res_multistep, cfg 1).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .flux import _random, _shapes

LAYERS = 2
FULL_SCALE = (30 + 4) / (LAYERS + 2)


def prepare(base: Path) -> None:
    """Write the diffusion model, text encoder and VAE under ``base/models``."""
    import torch
    from safetensors.torch import save_file

    from comfy_kernel_core_nodes.components.kl_vae import AutoencoderKL
    from comfy_kernel_core_nodes.components.llm.decoder import QWEN3_4B, DecoderLM
    from comfy_kernel_core_nodes.families.lumina2.nextdit import Z_IMAGE, NextDiT

    with torch.device("meta"):
        parts = {
            "diffusion_models/z-image-bench.safetensors": (
                NextDiT(replace(Z_IMAGE, n_layers=LAYERS, n_refiner_layers=1)), torch.bfloat16),
            "text_encoders/qwen_3_4b-2layers.safetensors": (DecoderLM(replace(QWEN3_4B, num_layers=2)),
                                                            torch.bfloat16),
            "vae/ae.safetensors": (AutoencoderKL(latent_channels=16, use_quant_conv=False), torch.float32),
        }
    for name, (module, dtype) in parts.items():
        path = base / "models" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(_random(_shapes(module), dtype), str(path))


def prompt(size: int, steps: int) -> dict[str, Any]:
    """The default graph's shape, with the node ids txt2img.py reads (5 KSampler, 6 decode, 7 save)."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "z-image-bench.safetensors",
                                                     "weight_dtype": "default"}},
        "8": {"class_type": "CLIPLoader", "inputs": {"clip_name": "qwen_3_4b-2layers.safetensors",
                                                     "type": "lumina2", "device": "default"}},
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "10": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["1", 0], "shift": 3.0}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": "a photo of a cat"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": "low quality"}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["10", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 0,
            "steps": steps, "cfg": 1.0, "sampler_name": "res_multistep", "scheduler": "simple", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["9", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }
