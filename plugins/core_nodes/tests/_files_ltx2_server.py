"""Random-weight files for LTX-2's templates: one checkpoint holding everything the templates read from it, and a
LoRA for its transformer.

The checkpoint joins _files_ltx2's transformer, video VAE, audio VAE and
vocoder with _files_ltx2_text's text projection and connectors. The
connectors give 256-wide states per stream, so the transformer here reads
256-wide text (``caption_channels``) instead of Gemma's 3840. The LoRA holds
rank-4 ``lora_A`` / ``lora_B`` pairs on the first block's video attention
under ``diffusion_model.``, as Lightricks' LoRA files name them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from _files_ltx2 import AUDIO_CONFIG, TRANSFORMER_CONFIG, _shapes, audio_vae_sd, video_vae_sd
from _files_ltx2_text import HEAD, head_sd
from _random_weights import cached_file, random_state_dict

from comfy_kernel_core_nodes.families.ltx2.transformer import LTX2Transformer

VERSION = "v1"
#: the transformer of _files_ltx2 reading the text connectors' width
CONFIG = replace(TRANSFORMER_CONFIG, caption_channels=HEAD["width"])


def checkpoint_sd(seed: int) -> dict[str, torch.Tensor]:
    sd = random_state_dict(_shapes(lambda: LTX2Transformer(CONFIG)), seed, torch.bfloat16)
    out = {"model.diffusion_model." + k: v for k, v in sd.items()}
    head = head_sd(HEAD, 23)
    del head["model.diffusion_model.patchify_proj.weight"]  # the text file's stand-in for a transformer
    return {**out, **head, **video_vae_sd("vae."), **audio_vae_sd()}


def checkpoint_file(seed: int = 31) -> Path:
    """A whole LTX-2 checkpoint: transformer, text projection and connectors, video VAE, audio VAE and vocoder,
    with the ``config`` metadata."""
    return cached_file(f"{VERSION}-ltx2_full_checkpoint_small_{seed}.safetensors", lambda: checkpoint_sd(seed),
                       metadata={"config": json.dumps(AUDIO_CONFIG)})


def lora_file(seed: int = 32, rank: int = 4, downscale: int | None = None) -> Path:
    """A LoRA on the first block's video self-attention projections; ``downscale``: an IC-LoRA whose metadata
    asks for guides that much smaller (``reference_downscale_factor``, as the released IC-LoRAs carry it)."""
    def make() -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        sd = {}
        for name in ("to_q", "to_k", "to_v", "to_out.0"):
            key = f"diffusion_model.transformer_blocks.0.attn1.{name}"
            sd[key + ".lora_A.weight"] = (0.1 * torch.randn(rank, CONFIG.dim, generator=generator)).bfloat16()
            sd[key + ".lora_B.weight"] = (0.1 * torch.randn(CONFIG.dim, rank, generator=generator)).bfloat16()
        return sd

    if downscale is None:
        return cached_file(f"{VERSION}-ltx2_lora_small_{seed}.safetensors", make)
    return cached_file(f"{VERSION}-ltx2_ic_lora_{seed}_x{downscale}.safetensors", make,
                       {"reference_downscale_factor": str(downscale)})
