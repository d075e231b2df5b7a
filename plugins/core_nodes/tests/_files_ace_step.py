"""Random-weight files of the ACE-Step 1.5 family in ComfyUI's key layouts (see _random_weights).

Every width is read from the files, so the networks are shrunk where the
layout allows: 128-wide attention heads stay, the DiT is 256 wide (the XL
variant 384 over a 256-wide condition encoder, as the XL's 2560 over 2048),
two DiT layers (one sliding-window, one full), one layer per encoder; the
Qwen3s are 64 wide with one layer but keep their vocabularies (151669 text
tokens; the language model's 217204 include the 64000 audio codes), which is
how they are told apart; the VAE has the 48 kHz strides with 8 base channels.
Files are written once into the repository's ``.cache``; the version in each
name changes when a recipe does.

| file | what |
| --- | --- |
| acestep_v1.5_turbo | the DiT file (UNETLoader) |
| acestep_v1.5_xl | the XL layout (wider DiT than its condition encoder) |
| qwen_0.6b_ace15 | the text encoder |
| qwen_lm_ace15 | the 5 Hz language model |
| ace_1.5_vae | the audio VAE |
| ace_step_1.5_aio | all of them in one checkpoint (CheckpointLoaderSimple) |
"""

from __future__ import annotations

from pathlib import Path

import torch
from _random_weights import cached_file, module_shapes, random_state_dict

from comfy_kernel_core_nodes.components.llm.decoder import DecoderLM, LLMConfig
from comfy_kernel_core_nodes.components.oobleck_vae import OobleckLayout, OobleckVAE
from comfy_kernel_core_nodes.families.ace_step.transformer import AceStep15, AceStepConfig
from comfy_kernel_core_nodes.model import ops

VERSION = "v1"

DIT = AceStepConfig(hidden_size=256, intermediate_size=512, num_layers=2, num_heads=2, num_kv_heads=1,
                    encoder_hidden_size=256, encoder_intermediate_size=512, encoder_heads=2, encoder_kv_heads=1,
                    text_hidden_dim=64, lyric_layers=1, timbre_layers=1, tokenizer_layers=1)
DIT_XL = AceStepConfig(hidden_size=384, intermediate_size=768, num_layers=2, num_heads=3, num_kv_heads=1,
                       encoder_hidden_size=256, encoder_intermediate_size=512, encoder_heads=2, encoder_kv_heads=1,
                       text_hidden_dim=64, lyric_layers=1, timbre_layers=1, tokenizer_layers=1)
TEXT = LLMConfig(vocab_size=151669, hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2,
                 num_kv_heads=1, qk_norm=True)
LM = LLMConfig(vocab_size=217204, hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2, num_kv_heads=1,
               qk_norm=True)
VAE = OobleckLayout(channels=8)


def _shapes(build) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return module_shapes(build())


def dit_sd(config: AceStepConfig = DIT, seed: int = 21) -> dict[str, torch.Tensor]:
    return random_state_dict(_shapes(lambda: AceStep15(config, ops.plain)), seed, torch.bfloat16)


def text_sd(config: LLMConfig = TEXT, seed: int = 22) -> dict[str, torch.Tensor]:
    return random_state_dict(_shapes(lambda: DecoderLM(config)), seed, torch.bfloat16)


def vae_sd(seed: int = 24) -> dict[str, torch.Tensor]:
    """The VAE with snake parameters near 0 (α = β = 1) and unit-gain weight norms."""
    sd = random_state_dict(_shapes(lambda: OobleckVAE(VAE)), seed, torch.float32)
    for key in sd:
        if key.endswith((".alpha", ".beta")):
            sd[key] = 0.05 * torch.randn(sd[key].shape, generator=torch.Generator().manual_seed(len(key)))
        elif key.endswith(".weight_g"):
            sd[key] = torch.ones_like(sd[key])
    return sd


def dit() -> Path:
    return cached_file(f"{VERSION}-acestep_v1.5_turbo.safetensors", dit_sd)


def dit_xl() -> Path:
    return cached_file(f"{VERSION}-acestep_v1.5_xl.safetensors", lambda: dit_sd(DIT_XL, 25))


def text_encoder() -> Path:
    return cached_file(f"{VERSION}-qwen_0.6b_ace15.safetensors", text_sd)


def language_model() -> Path:
    return cached_file(f"{VERSION}-qwen_lm_ace15.safetensors", lambda: text_sd(LM, 23))


def vae() -> Path:
    return cached_file(f"{VERSION}-ace_1.5_vae.safetensors", vae_sd)


def checkpoint() -> Path:
    """ComfyUI's all-in-one layout: ``model.diffusion_model.``, ``vae.``, ``text_encoders.qwen3_06b/2b.transformer.``."""
    def make() -> dict[str, torch.Tensor]:
        out = {f"model.diffusion_model.{k}": v for k, v in dit_sd().items()}
        out.update({f"vae.{k}": v for k, v in vae_sd().items()})
        out.update({f"text_encoders.qwen3_06b.transformer.{k}": v for k, v in text_sd().items()})
        out.update({f"text_encoders.qwen3_2b.transformer.{k}": v for k, v in text_sd(LM, 23).items()})
        return out

    return cached_file(f"{VERSION}-ace_step_1.5_aio.safetensors", make)
