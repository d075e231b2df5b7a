"""Random-weight files of LTX-Video 0.9 in the released key layouts (see _random_weights).

The checkpoints hold the transformer under ``model.diffusion_model.`` and the
video VAE under ``vae.``, as Lightricks' single files do: the transformer at
32 heads of 4 channels (released: 64) and two blocks, reading 64-wide text
states; the VAE with the released stage lists and depths (0.9.0's strided
convolutions, or 0.9.5's space-to-depth stages and timestep-conditioned
decoder) and 128 latent channels, at widths 8-128 (released: 128-2048), with
all five per-channel statistics the released files carry. The text encoder is
a T5 of width 64 and two layers with the full T5 vocabulary. Files are
written once into the repository's ``.cache`` and reused; the version in each
name changes when a recipe does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from _random_weights import cached_file, module_shapes, random_state_dict

from comfy_kernel_core_nodes.components.t5 import T5Config, T5Encoder
from comfy_kernel_core_nodes.families.ltxv.transformer import LTXVConfig, LTXVTransformer
from comfy_kernel_core_nodes.families.ltxv.vae import UNUSED_STATISTICS, LTXVVideoVAENet, released_layout

VERSION = "v1"
T5_CONFIG = T5Config(width=64, ff_width=128, heads=2, layers=2)
TRANSFORMER_CONFIG = LTXVConfig(head_dim=4, cross_attention_dim=128, caption_channels=T5_CONFIG.width, num_layers=2)
#: the small VAEs: the released stage lists from 8 channels (0.9.0's decoder up from 32, 0.9.5's from 32)
VAE_LAYOUTS = {"0.9.0": released_layout("0.9.0", encoder_width=8, decoder_width=8),
               "0.9.5": released_layout("0.9.5", encoder_width=8, decoder_width=4)}


def _shapes(build) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return module_shapes(build())


def vae_sd(version: str, prefix: str = "", seed: int = 41) -> dict[str, torch.Tensor]:
    """The VAE's weights and statistics; the decoder's timestep multiplier at the released 1000."""
    layout = VAE_LAYOUTS[version]
    sd = random_state_dict(_shapes(lambda: LTXVVideoVAENet(layout)), seed, torch.bfloat16)
    if "decoder.timestep_scale_multiplier" in sd:
        sd["decoder.timestep_scale_multiplier"] = torch.tensor(1000.0, dtype=torch.bfloat16)
    generator = torch.Generator().manual_seed(seed)
    stats = {"mean-of-means": 0.1 * torch.randn(layout.latent, generator=generator),
             "std-of-means": 0.5 + torch.rand(layout.latent, generator=generator)}
    stats.update({name: torch.rand(layout.latent, generator=generator) for name in UNUSED_STATISTICS})
    sd.update({f"per_channel_statistics.{name}": t.to(torch.bfloat16) for name, t in stats.items()})
    return {prefix + k: v for k, v in sd.items()}


def transformer_sd(seed: int = 42) -> dict[str, torch.Tensor]:
    return random_state_dict(_shapes(lambda: LTXVTransformer(TRANSFORMER_CONFIG)), seed, torch.bfloat16)


def checkpoint_file(version: str = "0.9.0") -> Path:
    """A single-file checkpoint: the transformer and the ``version`` VAE."""
    def make() -> dict[str, torch.Tensor]:
        model = {"model.diffusion_model." + k: v for k, v in transformer_sd().items()}
        return {**model, **vae_sd(version, "vae.")}

    return cached_file(f"{VERSION}-ltxv_{version}_checkpoint_small.safetensors", make)


def t5_file(seed: int = 43) -> Path:
    """A T5 v1.1 encoder file with the bare key layout of ``t5xxl_fp16.safetensors``."""
    return cached_file(f"{VERSION}-ltxv_t5_small.safetensors",
                       lambda: random_state_dict(_shapes(lambda: T5Encoder(T5_CONFIG)), seed, torch.float16))
