"""Discrete-time EPS model sampling of Stable Diffusion 1.x.

The sampler works in the "variance exploding" sigma space of k-diffusion while
the UNet was trained on 1000 discrete DDPM timesteps. This module holds the
sigma table and the conversions between the two worlds, computed exactly as the
reference implementation does (float64 table, stored as float32) so that
schedules agree to the last bit.
"""

from __future__ import annotations

import torch


class DiscreteEpsSampling:
    """SD1.5 noise schedule: scaled-linear betas over 1000 steps, eps prediction."""

    def __init__(
        self, linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000
    ) -> None:
        betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.alphas_cumprod = alphas_cumprod.float()
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Index of the table entry nearest in log sigma (what the UNet is fed)."""
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma of a possibly fractional timestep (log-linear interpolation)."""
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), min=0, max=len(self.sigmas) - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(timestep.device)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """UNet input: the VE sample brought back to unit variance."""
        sigma = _per_sample(sigma, x)
        return x / (sigma**2 + 1.0) ** 0.5

    def calculate_denoised(self, sigma: torch.Tensor, eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x - eps * _per_sample(sigma, eps)

    def noise_scaling(
        self,
        sigma: torch.Tensor | float,
        noise: torch.Tensor,
        latent: torch.Tensor,
        max_denoise: bool = False,
    ) -> torch.Tensor:
        """Starting point: a full denoise starts from sqrt(1 + sigma^2)-scaled noise, like the VP prior."""
        sigma = torch.as_tensor(sigma, dtype=noise.dtype)
        scale = torch.sqrt(1.0 + sigma**2.0) if max_denoise else sigma
        return noise * scale + latent

    def inverse_noise_scaling(self, sigma: torch.Tensor | float, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def is_max_denoise(self, sigmas: torch.Tensor) -> bool:
        """True when the schedule starts at (or above) sigma_max, relative tolerance 1e-5."""
        max_sigma = float(self.sigma_max)
        first = float(sigmas[0])
        return abs(max_sigma - first) <= 1e-5 * max(abs(max_sigma), abs(first)) or first > max_sigma


def _per_sample(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.view(sigma.shape[:1] + (1,) * (x.ndim - 1))


def eps_to_denoiser(unet_fn, model_sampling: DiscreteEpsSampling):
    """Turn a UNet ``unet_fn(x_in, timestep, context) -> eps`` into ``model_fn(x, sigma, context) -> denoised``."""

    def model_fn(x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x_in = model_sampling.calculate_input(sigma, x)
        t = model_sampling.timestep(sigma).float()
        eps = unet_fn(x_in, t, context).float()
        return model_sampling.calculate_denoised(sigma, eps, x)

    return model_fn
