"""The high-level sampling calls nodes make (ComfyUI's ``comfy.sample``).

``sample`` is what KSampler / KSamplerAdvanced run; ``sample_custom`` what
SamplerCustom(Advanced) run with an explicit SAMPLER and SIGMAS. Both return
a latent in the VAE's units on the CPU (the intermediate device).
"""

from __future__ import annotations

from typing import Any

import torch

from ..model.conds import repeat_to_batch_size
from ..model.nested import is_nested
from .guider import sample as guided_sample
from .ksampler import KSampler
from .noise import prepare_noise

__all__ = ["fix_empty_latent_channels", "prepare_noise", "sample", "sample_custom"]


def fix_empty_latent_channels(model: Any, latent_image: torch.Tensor) -> torch.Tensor:
    """An empty latent with the wrong channel count (EmptyLatentImage for a 16-channel model) is widened."""
    if is_nested(latent_image):
        return latent_image
    latent_format = model.get_model_object("latent_format")
    if latent_format.latent_channels != latent_image.shape[1] and torch.count_nonzero(latent_image) == 0:
        latent_image = repeat_to_batch_size(latent_image, latent_format.latent_channels, dim=1)
    if latent_format.latent_dimensions == 3 and latent_image.ndim == 4:
        latent_image = latent_image.unsqueeze(2)
    return latent_image


def sample(model: Any, noise: torch.Tensor, steps: int, cfg: float, sampler_name: str, scheduler: str,
           positive: list, negative: list, latent_image: torch.Tensor, denoise: float = 1.0,
           disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
           force_full_denoise: bool = False, noise_mask: torch.Tensor | None = None,
           sigmas: torch.Tensor | None = None, callback: Any = None, disable_pbar: bool = False,
           seed: int | None = None) -> torch.Tensor:
    sampler = KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name, scheduler=scheduler,
                       denoise=denoise, model_options=model.model_options)
    samples = sampler.sample(noise, positive, negative, cfg=cfg, latent_image=latent_image, start_step=start_step,
                             last_step=last_step, force_full_denoise=force_full_denoise, denoise_mask=noise_mask,
                             sigmas=sigmas, callback=callback, disable_pbar=disable_pbar, seed=seed)
    return samples.to("cpu")


def sample_custom(model: Any, noise: torch.Tensor, cfg: float, sampler: Any, sigmas: torch.Tensor,
                  positive: list, negative: list, latent_image: torch.Tensor,
                  noise_mask: torch.Tensor | None = None, callback: Any = None, disable_pbar: bool = False,
                  seed: int | None = None) -> torch.Tensor:
    samples = guided_sample(model, noise, positive, negative, cfg, model.load_device, sampler, sigmas,
                            model_options=model.model_options, latent_image=latent_image, denoise_mask=noise_mask,
                            callback=callback, disable_pbar=disable_pbar, seed=seed)
    return samples.to("cpu")
