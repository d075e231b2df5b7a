"""The Wan 2.1 VAE as a VAE object (Qwen-Image's ``qwen_image_vae``, Wan's ``wan_2.1_vae``)."""

from __future__ import annotations

from ...components.wan_vae import WanVAE
from ...model.detection import Shapes
from ...model.quant import network_weights
from ...model.vae import VAE, VAEModel


class Wan21VAE(VAE):
    """8x spatial, 4x temporal compression; latents are 5-d [B, 16, T, H/8, W/8]."""

    def temporal_compression_decode(self) -> int:
        return 4


def wan21_vae(path: str, prefix: str, shapes: Shapes) -> VAE:
    dim = int(shapes[prefix + "decoder.head.0.gamma"][0])
    weights = network_weights(path, prefix, shapes, "Wan 2.1 VAE", "vae",
                              lambda ops, compute: WanVAE(ops, dim=dim))
    return Wan21VAE(first_stage_model=VAEModel(weights), latent_channels=16, downscale_ratio=8, latent_dim=3)
