"""HunyuanVideo 1.5 for ``txt2img.py --family hunyuan_video15``: the real width (2048, 16 heads), fewer blocks.

The released model has 54 double stream blocks; this one has ``BLOCKS``
(per-step time scales about linearly with the block count, so the full
model's step is roughly ``FULL_SCALE`` times the one measured). The text
encoders are Qwen2.5-VL 7B at its real width with 3 layers (the conditioning
is the state after the third-to-last) and byT5 small at full size; the VAE is
the full HunyuanVideo 1.5 VAE. Random bf16 weights, written into the
benchmark's temporary model folders; the graph is the 720p T2V template's
first pass (ModelSamplingSD3 shift 7, EmptyHunyuanVideo15Latent, cfg 6,
euler / simple) at ``size`` x ``size`` and 5 frames, the frames saved with
SaveImage so txt2img.py's timings apply.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .flux import _random, _shapes

BLOCKS = 2
FULL_SCALE = 54 / BLOCKS
FRAMES = 5


def prepare(base: Path) -> None:
    """Write the diffusion model, text encoders and VAE under ``base/models``."""
    import torch
    from safetensors.torch import save_file

    from comfy_kernel_core_nodes.components.llm.decoder import QWEN25_7B
    from comfy_kernel_core_nodes.components.t5 import T5Config, T5Encoder
    from comfy_kernel_core_nodes.families.hunyuan_video15.transformer import (
        HunyuanVideo15Config,
        HunyuanVideo15Transformer,
    )
    from comfy_kernel_core_nodes.families.hunyuan_video15.vae import HunyuanVideo15VAENet
    from comfy_kernel_core_nodes.families.qwen_image.text import QwenVLEncoder
    from comfy_kernel_core_nodes.model import ops

    with torch.device("meta"):
        parts = {
            "diffusion_models/hunyuanvideo1.5-bench.safetensors": HunyuanVideo15Transformer(
                HunyuanVideo15Config(depth=BLOCKS)),
            "text_encoders/qwen_2.5_vl_7b-3layers.safetensors": QwenVLEncoder(
                replace(QWEN25_7B, num_layers=3), None, ops.plain, None),
            "text_encoders/byt5_small_glyphxl.safetensors": T5Encoder(
                T5Config(vocab_size=1510, width=1472, ff_width=3584, heads=6, layers=12), ops.plain),
            "vae/hunyuanvideo15_vae.safetensors": HunyuanVideo15VAENet(),
        }
    for name, module in parts.items():
        path = base / "models" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(_random(_shapes(module), torch.bfloat16), str(path))


def prompt(size: int, steps: int) -> dict[str, Any]:
    """The T2V template's first pass, with the node ids txt2img.py reads (5 KSampler, 6 decode, 7 save)."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "hunyuanvideo1.5-bench.safetensors",
                                                     "weight_dtype": "default"}},
        "8": {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "qwen_2.5_vl_7b-3layers.safetensors", "clip_name2": "byt5_small_glyphxl.safetensors",
            "type": "hunyuan_video_15", "device": "default"}},
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": "hunyuanvideo15_vae.safetensors"}},
        "10": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 7.0}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0],
                                                         "text": 'a paper airplane passes a sign saying "OPEN"'}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": ""}},
        "4": {"class_type": "EmptyHunyuanVideo15Latent", "inputs": {
            "width": size, "height": size, "length": FRAMES, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["10", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 0,
            "steps": steps, "cfg": 6.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["9", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }
