"""SD1.x discrete noise schedule: the sigma table and the sigma <-> timestep mapping.

The UNet is conditioned on an integer training timestep while samplers work in
sigmas, so every model call converts the sampler's sigma to the nearest timestep
in log space. The table is computed in float64 and stored in float32, as ComfyUI does.
"""

from __future__ import annotations

import functools
import math

import torch

NUM_TIMESTEPS = 1000
LINEAR_START = 0.00085
LINEAR_END = 0.012


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[torch.Tensor, torch.Tensor]:
    betas = torch.linspace(math.sqrt(LINEAR_START), math.sqrt(LINEAR_END), NUM_TIMESTEPS, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod) ** 0.5
    return sigmas.float(), sigmas.log().float()


def sigma_table() -> torch.Tensor:
    """The 1000 sigmas, float32, ascending (sigma_min = table[0], sigma_max = table[-1])."""
    return _tables()[0].clone()


def log_sigma_table() -> torch.Tensor:
    return _tables()[1].clone()


def sigma_min() -> float:
    return float(_tables()[0][0])


def sigma_max() -> float:
    return float(_tables()[0][-1])


def sigma_to_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """Index of the nearest log-sigma in the table, as a float tensor of sigma's shape."""
    log_sigmas = _tables()[1].to(sigma.device)
    dists = sigma.float().log().reshape(1, -1) - log_sigmas[:, None]
    return dists.abs().argmin(dim=0).reshape(sigma.shape).float()


def timestep_to_sigma(timestep: torch.Tensor) -> torch.Tensor:
    """Sigma of a (possibly fractional) timestep: log-linear interpolation between table entries."""
    log_sigmas = _tables()[1].to(timestep.device)
    t = timestep.float().clamp(0, NUM_TIMESTEPS - 1)
    low, high = t.floor().long(), t.ceil().long()
    w = t.frac()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def scale_model_input(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The UNet sees x / sqrt(sigma^2 + 1) (EPS prediction, sigma_data = 1)."""
    sigma = sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1)).to(x)
    return x / (sigma**2 + 1.0) ** 0.5


def denoised_from_eps(x: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0 prediction x - sigma * eps."""
    sigma = sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1)).to(x)
    return x - eps * sigma
