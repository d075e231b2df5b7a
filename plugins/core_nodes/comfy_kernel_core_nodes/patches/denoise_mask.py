"""Differential Diffusion (Levin & Fried 2023): a soft inpainting mask applied as a per-step threshold.

As a ``denoise_mask_function``: at each step the pixels whose mask value is at
least the fraction of the run still ahead are denoised, the others kept, so
a grey value g is inpainted during the last g of the schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def differential_diffusion(strength: float = 1.0) -> Callable[..., torch.Tensor]:
    """The mask function; ``strength`` < 1 blends the thresholded mask with the original soft one."""

    def denoise_mask(sigma: torch.Tensor, denoise_mask: torch.Tensor, extra_options: dict[str, Any]) -> torch.Tensor:
        model_sampling = extra_options["model"].inner_model.model_sampling
        step_sigmas = extra_options["sigmas"]
        sigma_to = model_sampling.sigma_min
        if step_sigmas[-1] > sigma_to:
            sigma_to = step_sigmas[-1]
        ts_from = model_sampling.timestep(step_sigmas[0])
        ts_to = model_sampling.timestep(sigma_to)
        current = model_sampling.timestep(sigma[0])
        threshold = (current - ts_to) / (ts_from - ts_to)
        binary = (denoise_mask >= threshold).to(denoise_mask.dtype)
        if strength and strength < 1:
            return strength * binary + (1 - strength) * denoise_mask
        return binary

    return denoise_mask
