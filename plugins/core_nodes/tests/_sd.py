"""Helpers for stage tests: the tiny checkpoint's networks and the production code around them.

Networks are built from their state dicts here so a test can call them
directly; everything around them (model sampling, apply_model, the VAE's
IMAGE conversion and tiling) is the plugin's own code.
"""

from __future__ import annotations

from typing import Any

import torch

from comfy_kernel_core_nodes.model.base import BaseModel, ModelType, WeightsSource, model_sampling
from comfy_kernel_core_nodes.model.files import read_state_dict
from comfy_kernel_core_nodes.model.vae import VAE, VAEModel

UNET = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP = "cond_stage_model.transformer.text_model."


def split(path: Any) -> tuple[dict, dict, dict]:
    """(unet, vae, clip) state dicts of an SD1 checkpoint, prefixes removed."""
    sd = read_state_dict(path)
    part = lambda p: {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}  # noqa: E731
    clip = part(CLIP)
    clip.pop("embeddings.position_ids", None)
    return part(UNET), part(VAE_PREFIX), clip


def sd15_sampling() -> torch.nn.Module:
    return model_sampling(None, ModelType.EPS)


def sd15_model(unet: torch.nn.Module) -> BaseModel:
    """An SD1.5 BaseModel running ``unet`` (apply_model returns the denoised prediction)."""
    from comfy_kernel_core_nodes.families.sd.models import SD15

    return BaseModel(SD15({}), ModelType.EPS).bind(unet)


def predict_noise(unet: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    ms = sd15_sampling()
    sigma = sigma.reshape(-1).float()
    return unet(ms.calculate_input(sigma, x), ms.timestep(sigma).float(), context=context).float()


def denoise(unet: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    return sd15_model(unet).apply_model(x, sigma.reshape(-1).float(), c_crossattn=context)


def vae_of(module: torch.nn.Module) -> VAE:
    """A VAE object around an already built autoencoder."""
    weights = WeightsSource(key=f"test-vae-{id(module)}", read=lambda device: {}, build=lambda sd: module,
                            keys=frozenset(), size=0)
    return VAE(first_stage_model=VAEModel(weights))
