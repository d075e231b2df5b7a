"""The Wan 2.2 VAE as a VAE object (``wan2.2_vae``: 48 channels, 16x spatial, 4x temporal compression).

The Wan 2.1 VAE (``wan_2.1_vae``) is Qwen-Image's, registered there.
"""

from __future__ import annotations

from ...components.wan_vae import WanVAE22
from ...model.detection import Shapes
from ...model.quant import network_weights
from ...model.vae import VAE, VAEModel


class Wan22VAE(VAE):
    """Latents are 5-d [B, 48, T, H/16, W/16]; T latent frames decode to 1 + 4 (T - 1)."""

    def temporal_compression_decode(self) -> int:
        return 4


def wan22_vae(path: str, prefix: str, shapes: Shapes) -> VAE:
    dim = int(shapes[prefix + "encoder.conv1.weight"][0])
    dec_dim = int(shapes[prefix + "decoder.head.0.gamma"][0])
    weights = network_weights(path, prefix, shapes, "Wan 2.2 VAE", "vae",
                              lambda ops, compute: WanVAE22(ops, dim=dim, dec_dim=dec_dim))
    return Wan22VAE(first_stage_model=VAEModel(weights), latent_channels=48, downscale_ratio=16, latent_dim=3)
