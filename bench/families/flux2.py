"""Flux.2 klein 4B for ``txt2img.py --family flux2``: the transformer at its real width, fewer blocks.

klein 4B has 5 double and 20 single blocks of width 3072 (24 heads); this one
has ``DOUBLE`` and ``SINGLE`` (a step of the full model is roughly
``FULL_SCALE`` times the one measured). The text encoder is Qwen3 at a reduced
width (64) with the 28 layers klein reads, so the context has 3 x 64 channels
instead of 3 x 2560 (only the text input projection is smaller; the 512 text
tokens are the real count); the VAE is the real Flux.2 autoencoder. The
workflow has the klein text-to-image template's loaders and latent
(CLIPLoader type flux2, EmptyFlux2LatentImage) and samples with KSampler at
CFG 1 (the seed txt2img.py varies lives there; a step costs what the
template's SamplerCustomAdvanced step costs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from families.flux import _random, _shapes

DOUBLE, SINGLE = 1, 2
FULL_SCALE = (5 * 2 + 20) / (DOUBLE * 2 + SINGLE)


def prepare(base: Path) -> None:
    """Write the transformer, the text encoder and the VAE under ``base/models``."""
    import torch
    from safetensors.torch import save_file

    from comfy_kernel_core_nodes.components.llm.decoder import DecoderLM, LLMConfig
    from comfy_kernel_core_nodes.families.flux.flux2 import Flux2
    from comfy_kernel_core_nodes.families.flux.flux2_vae import Flux2Autoencoder
    from comfy_kernel_core_nodes.families.flux.model import FluxParams

    params = FluxParams(in_channels=128, out_channels=128, vec_in_dim=0, context_in_dim=3 * 64, hidden_size=3072,
                        mlp_ratio=3.0, num_heads=24, depth=DOUBLE, depth_single_blocks=SINGLE,
                        axes_dim=(32, 32, 32, 32), theta=2000, patch_size=1, qkv_bias=False, guidance_embed=False)
    encoder = LLMConfig(vocab_size=151936, hidden_size=64, intermediate_size=128, num_layers=28, num_heads=2,
                        num_kv_heads=1, head_dim=32, qk_norm=True)
    with torch.device("meta"):
        parts = {
            "diffusion_models/flux2-klein-bench.safetensors": (Flux2(params), torch.bfloat16),
            "text_encoders/qwen3-narrow.safetensors": (DecoderLM(encoder), torch.bfloat16),
            "vae/flux2-vae.safetensors": (Flux2Autoencoder(), torch.float32),
        }
    for name, (module, dtype) in parts.items():
        path = base / "models" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(_random(_shapes(module), dtype), str(path))


def prompt(size: int, steps: int) -> dict[str, Any]:
    """klein's text-to-image template shape, with the node ids txt2img.py reads (5 sampler, 6 decode, 7 save)."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux2-klein-bench.safetensors",
                                                     "weight_dtype": "default"}},
        "8": {"class_type": "CLIPLoader", "inputs": {"clip_name": "qwen3-narrow.safetensors", "type": "flux2"}},
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": "flux2-vae.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": "a photo of a cat"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": ""}},
        "4": {"class_type": "EmptyFlux2LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 0,
            "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["9", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }
