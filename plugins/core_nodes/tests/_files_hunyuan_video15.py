"""Random-weight files of HunyuanVideo 1.5 in the released files' key layouts (see _random_weights).

The transformer is written in the original checkpoints' names (``img_attn_qkv``,
``img_mod.linear``, ``mlp.fc1``, ``txt_in.c_embedder.linear_1`` ...), as the
repackaged ComfyUI files keep them, with the released widths that detection
fixes (Qwen2.5-VL's 3584, byT5's 1472, SigLIP's 1152, heads of 128) and a
256-wide, two-block body. The VAE keeps the real layout (five resolutions,
32 latent channels) at 16-64 channels. byT5 has the real width (1472, six
heads of 64) and two layers; Qwen2.5-VL is _files_qwen's one-layer file.
Files are written once into the repository's ``.cache`` and reused; the
version in each name changes when a recipe does.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from _random_weights import cached_file, module_shapes, random_state_dict

from comfy_kernel_core_nodes.components.t5 import T5Config, T5Encoder
from comfy_kernel_core_nodes.families.hunyuan_video15.transformer import (
    HunyuanVideo15Config,
    HunyuanVideo15Transformer,
)
from comfy_kernel_core_nodes.families.hunyuan_video15.vae import HunyuanVideo15VAENet
from comfy_kernel_core_nodes.model import ops

VERSION = "v1"
VAE_CHANNELS = (16, 32, 32, 64, 64)
BYT5 = T5Config(vocab_size=1510, width=1472, ff_width=3584, heads=6, layers=2)

#: module name -> original checkpoint name, applied in order
ORIGINAL = (
    (r"_attn\.norm\.query_norm\.scale$", "_attn_q_norm.weight"), (r"_attn\.norm\.key_norm\.scale$", "_attn_k_norm.weight"),
    (r"_attn\.qkv\.", "_attn_qkv."), (r"_attn\.proj\.", "_attn_proj."), (r"_mod\.lin\.", "_mod.linear."),
    (r"mlp\.0\.", "mlp.fc1."), (r"mlp\.2\.", "mlp.fc2."),
    (r"^txt_in\.c_embedder\.in_layer\.", "txt_in.c_embedder.linear_1."),
    (r"^txt_in\.c_embedder\.out_layer\.", "txt_in.c_embedder.linear_2."),
    (r"_(in|embedder)\.in_layer\.", r"_\1.mlp.0."), (r"_(in|embedder)\.out_layer\.", r"_\1.mlp.2."),
)


def original_key(key: str) -> str:
    for pattern, repl in ORIGINAL:
        key = re.sub(pattern, repl, key)
    return key


def transformer_config(kind: str = "t2v") -> HunyuanVideo15Config:
    """``t2v`` / ``i2v`` (65 input channels: the same layout) or ``sr`` (98 channels, MeanFlow's ``time_r_in``)."""
    base = dict(hidden_size=256, num_heads=2, depth=2)
    if kind == "sr":
        return HunyuanVideo15Config(in_channels=98, meanflow=True, **base)
    return HunyuanVideo15Config(**base)


def _shapes(build) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return module_shapes(build())


def transformer_sd(kind: str = "t2v", dtype: torch.dtype = torch.float16, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random weights under the original checkpoints' names."""
    sd = random_state_dict(_shapes(lambda: HunyuanVideo15Transformer(transformer_config(kind), ops.plain)), seed,
                           dtype)
    return {original_key(k): v for k, v in sd.items()}


def transformer_file(kind: str = "t2v", seed: int = 1) -> Path:
    return cached_file(f"{VERSION}-hunyuanvideo1.5_{kind}_fp16_{seed}.safetensors",
                       lambda: transformer_sd(kind, seed=seed))


def vae_file() -> Path:
    return cached_file(f"{VERSION}-hunyuanvideo15_vae_small.safetensors",
                       lambda: random_state_dict(_shapes(lambda: HunyuanVideo15VAENet(channels=VAE_CHANNELS)), 4,
                                                 torch.float16))


def byt5_file() -> Path:
    """byT5 small (glyph) in ComfyUI's standalone layout (``shared``, ``encoder.block.N...``)."""
    def make() -> dict[str, torch.Tensor]:
        sd = random_state_dict(_shapes(lambda: T5Encoder(BYT5, ops.plain)), 5, torch.float16)
        sd["shared.weight"] = sd["shared.weight"] * 10
        return sd

    return cached_file(f"{VERSION}-byt5_small_glyphxl_fp16.safetensors", make)


def qwen_file() -> Path:
    """Qwen2.5-VL 7B, scaled fp8: the same file as Qwen-Image's (ComfyUI ships one for both families)."""
    from _files_qwen import qwen25_vl_fp8_scaled

    return qwen25_vl_fp8_scaled()


def upsampler_file(kind: str = "1080p") -> Path:
    """A latent upsampler: ``1080p`` (decoder-like, 64/32 channels) or ``720p`` (a 32-wide triple stack)."""
    from comfy_kernel_core_nodes.families.hunyuan_video15.upsampler import Upsampler720, Upsampler1080

    def make() -> dict[str, torch.Tensor]:
        if kind == "720p":
            build = lambda: Upsampler720(ops.plain, 32, 32, 32, 2)  # noqa: E731
        else:
            build = lambda: Upsampler1080(ops.plain, 32, 32, (64, 32))  # noqa: E731
        sd = random_state_dict(_shapes(build), 6, torch.float16)
        # the released 1080p file keeps its 1x1 shortcuts as bare ``nin_shortcut`` convolutions
        return {k.replace("nin_shortcut.conv.", "nin_shortcut."): v for k, v in sd.items()}

    return cached_file(f"{VERSION}-hunyuanvideo15_latent_upsampler_{kind}.safetensors", make)


def siglip_file() -> Path:
    """SigLIP so400m/14-384 (27 layers of 1152, as detection requires) in ComfyUI's CLIP vision names."""
    from comfy_kernel_core_nodes.components.clip_vision import SIGLIP_384, CLIPVisionModel

    return cached_file(f"{VERSION}-sigclip_vision_patch14_384.safetensors",
                       lambda: random_state_dict(_shapes(lambda: CLIPVisionModel(SIGLIP_384)), 7, torch.float16))
