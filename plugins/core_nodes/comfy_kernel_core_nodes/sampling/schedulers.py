"""Sigma schedules offered by KSampler's ``scheduler`` input.

Every schedule returns a float32 tensor of ``steps + 1`` sigmas ending in 0 (the
reference builds most of them from Python floats, hence FloatTensor at the end).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

SCHEDULER_NAMES = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]

#: Any model sampling object (see model/model_sampling.py): sigmas, sigma_min/max, timestep() and sigma().
ModelSampling = Any

# Samplers whose last step is wasteful at sigma_min: the schedule is built one
# step longer and its penultimate value dropped.
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def _with_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022): uniform in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _with_zero((hi + ramp * (lo - hi)) ** rho)


def exponential(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Uniform in log sigma."""
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def polyexponential(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """A polynomial ramp (power rho) in log sigma; rho = 1 is the exponential schedule."""
    ramp = torch.linspace(1, 0, steps) ** rho
    return _with_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def vp(steps: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    """The continuous variance-preserving schedule, t from 1 down to eps_s."""
    t = torch.linspace(1, eps_s, steps)
    return _with_zero(torch.sqrt(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t)))


def laplace(steps: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5) -> torch.Tensor:
    """Log sigma Laplace-distributed around mu (Tiankai et al. 2024); clamped, without a final zero."""
    x = torch.linspace(0, 1, steps)
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + 1e-5)
    return torch.clamp(torch.exp(lmb), min=sigma_min, max=sigma_max)


def kl_optimal(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """'Align Your Steps' KL-optimal schedule: uniform in arctan(sigma)."""
    idx = torch.arange(steps, dtype=torch.float).div_(max(steps - 1, 1))  # one step: sigma_max, not 0/0
    sigmas = idx.new_zeros(steps + 1)
    sigmas[:-1] = (idx * math.atan(sigma_min) + (1 - idx) * math.atan(sigma_max)).tan_()
    return sigmas


def normal(ms: ModelSampling, steps: int, sgm: bool = False) -> torch.Tensor:
    """Uniform in timestep between the largest and smallest trained sigma."""
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=1e-5):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(ms.sigma(t)) for t in timesteps]
    if append_zero:
        sigs.append(0.0)
    return torch.FloatTensor(sigs)


def simple(ms: ModelSampling, steps: int) -> torch.Tensor:
    """Evenly strided entries of the sigma table, from the top."""
    stride = len(ms.sigmas) / steps
    sigs = [float(ms.sigmas[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.FloatTensor(sigs + [0.0])


def ddim_uniform(ms: ModelSampling, steps: int) -> torch.Tensor:
    """The DDIM paper's uniform timestep skipping (starts at index 1, below sigma_max)."""
    stride = max(len(ms.sigmas) // steps, 1)
    sigs = [float(ms.sigmas[i]) for i in range(1, len(ms.sigmas), stride)]
    return torch.FloatTensor(sigs[::-1] + [0.0])


def beta(ms: ModelSampling, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> torch.Tensor:
    """Timesteps at quantiles of a Beta distribution (Lee et al. 2024), duplicates removed."""
    from scipy import stats

    total = len(ms.sigmas) - 1
    ts = 1 - np.linspace(0, 1, steps, endpoint=False)
    ts = np.rint(stats.beta.ppf(ts, alpha, beta_) * total)
    sigs: list[float] = []
    last = -1.0
    for t in ts:
        if t != last:
            sigs.append(float(ms.sigmas[int(t)]))
        last = t
    return torch.FloatTensor(sigs + [0.0])


def linear_quadratic(
    ms: ModelSampling, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> torch.Tensor:
    """Linear then quadratic in 'noise fraction' (from Movie Gen), scaled by sigma_max."""
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold_noise * steps
        quad_steps = steps - linear_steps
        quad_coef = diff / (linear_steps * quad_steps**2)
        lin_coef = threshold_noise / linear_steps - 2 * diff / (quad_steps**2)
        const = quad_coef * (linear_steps**2)
        quad = [quad_coef * (i**2) + lin_coef * i + const for i in range(linear_steps, steps)]
        schedule = [1.0 - v for v in linear + quad + [1.0]]
    return torch.FloatTensor(schedule) * ms.sigma_max.cpu()


_HANDLERS: dict[str, Callable[[ModelSampling, int], torch.Tensor]] = {
    "simple": simple,
    "sgm_uniform": lambda ms, n: normal(ms, n, sgm=True),
    "karras": lambda ms, n: karras(n, float(ms.sigma_min), float(ms.sigma_max)),
    "exponential": lambda ms, n: exponential(n, float(ms.sigma_min), float(ms.sigma_max)),
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": lambda ms, n: kl_optimal(n, float(ms.sigma_min), float(ms.sigma_max)),
}


def calculate_sigmas(model_sampling: ModelSampling, scheduler_name: str, steps: int) -> torch.Tensor:
    """The raw schedule of ``steps`` steps for a scheduler name."""
    try:
        handler = _HANDLERS[scheduler_name]
    except KeyError:
        raise ValueError(f"unknown scheduler: {scheduler_name!r}") from None
    return handler(model_sampling, steps)
