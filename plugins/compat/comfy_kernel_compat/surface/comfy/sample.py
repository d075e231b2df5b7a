"""ComfyUI's ``comfy.sample``: noise preparation on core_nodes' sampling package."""

from __future__ import annotations

from typing import Any


def prepare_noise(latent_image: Any, seed: int, noise_inds: Any = None) -> Any:
    """Seeded noise shaped like ``latent_image`` (per batch index when ``noise_inds`` is given)."""
    from comfy_kernel_core_nodes.sampling.noise import prepare_noise as prepare

    return prepare(latent_image, seed, noise_inds)


def fix_empty_latent_channels(model: Any, latent_image: Any) -> Any:
    """Return the latent unchanged: comfy-kernel's SD models all use 4-channel latents."""
    return latent_image
