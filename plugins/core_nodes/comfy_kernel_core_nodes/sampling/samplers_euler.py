"""Euler-type samplers (Karras et al. 2022 and relatives) in sigma space."""

from __future__ import annotations

import torch

from ._common import ancestral_step, ones, report, seed_of, to_d
from .cfg import denoise_with_uncond
from .noise import default_noise_sampler


def _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise):
    """Karras' optional noise increase before a step; a no-op with the default s_churn = 0."""
    gamma = 0.0
    if s_churn > 0 and s_tmin <= sigmas[i] <= s_tmax:
        gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1)
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + torch.randn_like(x) * s_noise * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


@torch.no_grad()
def sample_euler(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=float("inf"),
    s_noise=1.0,
):
    """Karras et al. (2022) Algorithm 2 with Euler steps."""
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * ones(x), **extra_args)
        d = to_d(x, sigma_hat, denoised)
        report(callback, x, i, sigmas[i], denoised, sigma_hat)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """Euler steps down to sigma_down, then fresh noise of size sigma_up."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, x, i, sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised
        else:
            d = to_d(x, sigmas[i], denoised)
            x = (
                x
                + d * (sigma_down - sigmas[i])
                + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
            )
    return x


@torch.no_grad()
def sample_heun(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=float("inf"),
    s_noise=1.0,
):
    """Heun's second-order method (Euler predictor + trapezoid corrector); Euler on the step to 0."""
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * ones(x), **extra_args)
        d = to_d(x, sigma_hat, denoised)
        report(callback, x, i, sigmas[i], denoised, sigma_hat)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * ones(x), **extra_args))
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_heunpp2(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=float("inf"),
    s_noise=1.0,
):
    """Heun++: up to three evaluations per step, weighted by sigma relative to the start."""
    extra_args = extra_args or {}
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * ones(x), **extra_args)
        d = to_d(x, sigma_hat, denoised)
        report(callback, x, i, sigmas[i], denoised, sigma_hat)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * ones(x), **extra_args))
        if sigmas[i + 2] == s_end:
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = to_d(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2] * ones(x), **extra_args))
            w = 3 * sigmas[0]
            w2, w3 = sigmas[i + 1] / w, sigmas[i + 2] / w
            x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


@torch.no_grad()
def sample_dpm_2(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=float("inf"),
    s_noise=1.0,
):
    """DPM-Solver-2 style midpoint steps, the midpoint taken in log sigma."""
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * ones(x), **extra_args)
        d = to_d(x, sigma_hat, denoised)
        report(callback, x, i, sigmas[i], denoised, sigma_hat)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid * ones(x), **extra_args))
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """DPM-Solver-2 midpoint step down to sigma_down, then ancestral noise."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, x, i, sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid * ones(x), **extra_args))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def _lms_coeff(order: int, t, i: int, j: int) -> float:
    """Integral over [t_i, t_i+1] of the j-th Lagrange basis polynomial through the last `order` sigmas.

    scipy is imported here: its ``integrate`` package takes longer to import than all the samplers,
    and only LMS needs it.
    """
    from scipy import integrate

    def basis(tau):
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod

    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4):
    """Linear multistep (Adams-Bashforth with non-uniform steps) on the sigma ODE."""
    extra_args = extra_args or {}
    t = sigmas.detach().cpu().numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        ds.append(to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            cur = min(i + 1, order)
            coeffs = [_lms_coeff(cur, t, i, j) for j in range(cur)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=True))
    return x


def _vp_step_sampler(model, x, sigmas, extra_args, callback, noise_sampler, step):
    """Run a DDPM-style step function in the VP parameterisation (x / sqrt(1 + sigma^2))."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        eps = (x - denoised) / sigmas[i]
        x = step(x / torch.sqrt(1.0 + sigmas[i] ** 2.0), sigmas[i], sigmas[i + 1], eps, noise_sampler)
        if sigmas[i + 1] != 0:
            x *= torch.sqrt(1.0 + sigmas[i + 1] ** 2.0)
    return x


def _ddpm_step(x, sigma, sigma_prev, eps, noise_sampler):
    """Ancestral DDPM posterior step (Ho et al. 2020) between two cumulative alphas."""
    ac = 1 / (sigma * sigma + 1)
    ac_prev = 1 / (sigma_prev * sigma_prev + 1)
    alpha = ac / ac_prev
    mu = (1.0 / alpha).sqrt() * (x - (1 - alpha) * eps / (1 - ac).sqrt())
    if sigma_prev > 0:
        mu += ((1 - alpha) * (1.0 - ac_prev) / (1.0 - ac)).sqrt() * noise_sampler(sigma, sigma_prev)
    return mu


@torch.no_grad()
def sample_ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    return _vp_step_sampler(model, x, sigmas, extra_args, callback, noise_sampler, _ddpm_step)


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, s_noise=1.0,
               s_noise_end=None, noise_clip_std=0.0):
    """Latent Consistency Model sampling: jump to x0, re-noise to the next sigma with the model's noise_scaling.

    ``s_noise`` multiplies the fresh noise at the first step and moves linearly to
    ``s_noise_end`` at the last one (SamplerLCM); ``noise_clip_std`` > 0 clamps the
    fresh noise to that many of its standard deviations first.
    """
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    model_sampling = _model_sampling(model)
    s_noise_end = s_noise if s_noise_end is None else s_noise_end
    steps = len(sigmas) - 1
    for i in range(steps):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            noise = noise_sampler(sigmas[i], sigmas[i + 1])
            if noise_clip_std > 0:
                limit = noise_clip_std * noise.std()
                noise = noise.clamp(-limit, limit)
            scale = s_noise + (s_noise_end - s_noise) * i / (steps - 1) if steps > 1 else s_noise
            if scale != 1.0:
                noise = noise * scale
            if model_sampling is None:
                x = noise * sigmas[i + 1] + x
            else:
                x = model_sampling.noise_scaling(sigmas[i + 1], noise, x)
    return x


def _model_sampling(model):
    """The sampled model's ``model_sampling`` (sampler -> guider -> BaseModel), None for a bare function."""
    guider = getattr(model, "inner_model", None)
    return getattr(getattr(guider, "inner_model", None), "model_sampling", None)


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """CFG++ (Chung et al. 2024): x0 from the guided prediction, direction from the unconditional one."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    for i in range(len(sigmas) - 1):
        denoised, uncond = denoise_with_uncond(model, x, sigmas[i] * ones(x), extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        d = to_d(x, sigmas[i], uncond)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = denoised + sigma_down * d
        if eta > 0 and s_noise > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_euler_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
    return sample_euler_ancestral_cfg_pp(
        model, x, sigmas, extra_args, callback, disable, eta=0.0, s_noise=0.0
    )
