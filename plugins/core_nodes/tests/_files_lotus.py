"""Random-weight files for the Lotus-D tests: a reduced Lotus UNet in the released (diffusers) layout, the SD VAE.

diffusers builds the UNet (``UNet2DConditionModel`` with a 4-input projection
class embedding, the layout of the released Lotus-D files), so its key names
and its forward pass are the oracle's. SD 2's 320 channels are kept (detection
requires them) at two levels of one block each; the context stays 1024 wide.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _random_weights import cached_file, module_shapes, random_state_dict, write

VERSION = "v1"

LOTUS_UNET = {"block_out_channels": (320, 320), "layers_per_block": 1,
              "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
              "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "cross_attention_dim": 1024,
              "attention_head_dim": 8, "use_linear_projection": True,
              "class_embed_type": "projection", "projection_class_embeddings_input_dim": 4}


def lotus_unet(seed: int = 0, task_embedding: bool = True) -> Any:
    """The diffusers UNet with random weights (float32, eval mode); without the task embedding it is SD 2's."""
    from diffusers import UNet2DConditionModel

    config = dict(LOTUS_UNET)
    if not task_embedding:
        config.pop("class_embed_type")
        config.pop("projection_class_embeddings_input_dim")
    torch.manual_seed(seed)
    return UNet2DConditionModel(**config).eval()


def write_lotus_unet(path: Path, seed: int = 0, task_embedding: bool = True,
                     dtype: torch.dtype = torch.float16) -> Path:
    state = {k: v.to(dtype).contiguous() for k, v in lotus_unet(seed, task_embedding).state_dict().items()}
    return write(path, state)


def sd_vae_file() -> Path:
    """The SD KL VAE (4 latent channels) at full size with random weights, cached (167 MB in float16)."""
    def make() -> dict[str, torch.Tensor]:
        from comfy_kernel_core_nodes.components.kl_vae import AutoencoderKL

        with torch.device("meta"):
            net = AutoencoderKL()
        return random_state_dict(module_shapes(net), seed=11)

    return cached_file(f"{VERSION}-sd_vae_kl4.safetensors", make)


def place_lotus_depth_files(models_dir: Callable[[str], Path]) -> None:
    """The Lotus depth subgraph's files under the templates' names (once per server: tests share one)."""
    unet = models_dir("diffusion_models") / "lotus-depth-d-v1-1.safetensors"
    if not unet.exists():
        write_lotus_unet(unet, seed=1)
    vae = models_dir("vae") / "vae-ft-mse-840000-ema-pruned.safetensors"
    if not vae.exists():
        os.link(sd_vae_file(), vae)
