"""HiDream for ``txt2img.py --family hidream``: the HiDream-I1 Dev graph (UNETLoader, QuadrupleCLIPLoader,
ModelSamplingSD3 shift 6, lcm / normal at cfg 1, as the hidream_i1_dev template).

The transformer is HiDream's at reduced size: ``HEADS`` heads of 128
(environment ``HIDREAM_BENCH_HEADS``, default 10; the released model has 20)
and ``DOUBLE`` + ``SINGLE`` blocks (``HIDREAM_BENCH_BLOCKS`` "2,4"; released
16,32), every block with its four experts. The text encoders are a full CLIP-L
and CLIP-G and a 2-layer T5 and Llama 3.1 of the real widths (they run once
per prompt, not per step); the VAE is Flux's. Random bf16 weights, written
once into the benchmark's temporary model folders.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

HEADS = int(os.environ.get("HIDREAM_BENCH_HEADS", "10"))
DOUBLE, SINGLE = (int(n) for n in os.environ.get("HIDREAM_BENCH_BLOCKS", "2,4").split(","))


def prepare(base: Path) -> None:
    """Write the diffusion model, text encoders and VAE under ``base/models``."""
    import torch
    from safetensors.torch import save_file

    from comfy_kernel_core_nodes.components.clip.text_model import CLIP_G, CLIPTextModel
    from comfy_kernel_core_nodes.components.kl_vae import AutoencoderKL
    from comfy_kernel_core_nodes.components.llm.decoder import LLAMA31_8B, DecoderLM
    from comfy_kernel_core_nodes.components.t5 import T5Config, T5Encoder
    from comfy_kernel_core_nodes.families.hidream.transformer import (
        HiDreamConfig,
        HiDreamTransformer,
        full_llama_layers,
    )

    from .flux import _random, _shapes

    layout = HiDreamConfig(num_layers=DOUBLE, num_single_layers=SINGLE, num_attention_heads=HEADS,
                           llama_layers=full_llama_layers(DOUBLE + SINGLE, 2))
    with torch.device("meta"):
        parts = {
            "diffusion_models/hidream-bench.safetensors": (HiDreamTransformer(layout), torch.bfloat16),
            "text_encoders/clip_l.safetensors": (CLIPTextModel(), torch.float16),
            "text_encoders/clip_g.safetensors": (CLIPTextModel(CLIP_G), torch.float16),
            "text_encoders/t5xxl-2layers.safetensors": (T5Encoder(T5Config(layers=2)), torch.float16),
            "text_encoders/llama-2layers.safetensors": (DecoderLM(replace(LLAMA31_8B, num_layers=2)), torch.bfloat16),
            "vae/ae.safetensors": (AutoencoderKL(latent_channels=16, use_quant_conv=False), torch.float32),
        }
    for name, (module, dtype) in parts.items():
        path = base / "models" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = _random(_shapes(module), dtype)
        if name.endswith("clip_g.safetensors"):  # the file layout: text_model.*, the projection beside it
            tensors = {k if k == "text_projection.weight" else "text_model." + k: v for k, v in tensors.items()}
        save_file(tensors, str(path))


def prompt(size: int, steps: int) -> dict[str, Any]:
    """HiDream-I1 Dev's graph, with the node ids txt2img.py reads (2, 3 prompts, 5 KSampler, 6 decode, 7 save)."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "hidream-bench.safetensors",
                                                     "weight_dtype": "default"}},
        "8": {"class_type": "QuadrupleCLIPLoader", "inputs": {
            "clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors",
            "clip_name3": "t5xxl-2layers.safetensors", "clip_name4": "llama-2layers.safetensors"}},
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "10": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 6.0}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": "a photo of a cat"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": "bad ugly jpeg artifacts"}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["10", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 0,
            "steps": steps, "cfg": 1.0, "sampler_name": "lcm", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["9", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }
