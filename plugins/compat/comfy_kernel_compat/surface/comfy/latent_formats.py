"""ComfyUI's ``comfy.latent_formats`` for the latent spaces core_nodes implements (Stable Diffusion 1.x)."""

from __future__ import annotations

from typing import Any


class LatentFormat:
    """How a model's latents are scaled, and how they map to RGB for cheap previews."""

    scale_factor = 1.0
    latent_channels = 4
    latent_dimensions = 2
    latent_rgb_factors: list[list[float]] | None = None
    latent_rgb_factors_bias: list[float] | None = None
    taesd_decoder_name: str | None = None

    def process_in(self, latent: Any) -> Any:
        return latent * self.scale_factor

    def process_out(self, latent: Any) -> Any:
        return latent / self.scale_factor


class SD15(LatentFormat):
    scale_factor = 0.18215
    # No latent-to-RGB table is bundled: latent2rgb previews are skipped for SD1 latents.
    taesd_decoder_name = "taesd_decoder"
