"""Small shared pieces of the k-diffusion style samplers.

Convention: ``model(x, sigma_batch, **extra_args)`` returns the denoised (x0)
prediction; ``extra_args["seed"]`` seeds the sampler's own noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Callback = Callable[[dict[str, Any]], None] | None


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma = (x - x0) / sigma."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    v = torch.as_tensor(v)
    return v[(...,) + (None,) * (ndim - v.ndim)]


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0):
    """Split a step to sigma_next into a deterministic step down and fresh noise (sigma_down, sigma_up)."""
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def report(
    callback: Callback, x: torch.Tensor, i: int, sigma: torch.Tensor, denoised: torch.Tensor, sigma_hat=None
) -> None:
    if callback is not None:
        callback(
            {
                "x": x,
                "i": i,
                "sigma": sigma,
                "sigma_hat": sigma if sigma_hat is None else sigma_hat,
                "denoised": denoised,
            }
        )


def ones(x: torch.Tensor) -> torch.Tensor:
    return x.new_ones([x.shape[0]])


def seed_of(extra_args: dict | None) -> int | None:
    return None if extra_args is None else extra_args.get("seed")


def lam(sigma: torch.Tensor) -> torch.Tensor:
    """Half log-SNR of the VE parameterisation, lambda = -log sigma."""
    return sigma.log().neg()


def sigma_of(lam_: torch.Tensor) -> torch.Tensor:
    return lam_.neg().exp()
