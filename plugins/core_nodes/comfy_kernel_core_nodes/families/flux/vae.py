"""Flux.1's VAE is the shared 16-channel KL autoencoder (components/kl16_vae.py)."""

from ...components.kl16_vae import is_kl16, kl16_vae

__all__ = ["is_kl16", "kl16_vae"]
