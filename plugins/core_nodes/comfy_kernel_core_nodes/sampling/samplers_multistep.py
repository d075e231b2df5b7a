"""Multistep samplers that reuse past derivatives: iPNDM, DEIS, RES and gradient estimation."""

from __future__ import annotations

import numpy as np
import torch

from ._common import ancestral_step, lam, ones, report, seed_of, sigma_of, to_d
from .cfg import denoise_with_uncond
from .noise import default_noise_sampler


def _push(buffer: list, value: torch.Tensor, size: int) -> None:
    buffer.append(value)
    if len(buffer) > size:
        buffer.pop(0)


@torch.no_grad()
def sample_ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    """Improved PNDM (Zhang & Chen 2023): Adams-Bashforth with fixed coefficients, warm-started by lower orders."""
    extra_args = extra_args or {}
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones(x), **extra_args)
        report(callback, x, i, sigma, denoised)
        d = (x - denoised) / sigma
        order = min(max_order, i + 1)
        dt = sigma_next - sigma
        if sigma_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + dt * d
        elif order == 2:
            x_next = x + dt * (3 * d - history[-1]) / 2
        elif order == 3:
            x_next = x + dt * (23 * d - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            x_next = x + dt * (55 * d - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        _push(history, d, max_order - 1)
        x = x_next
    return x


def _ipndm_v_coeffs(order: int, h: list):
    """Variable-step Adams-Bashforth weights for iPNDM-v; h[0] is the current step, h[k] the k-th previous."""
    if order == 2:
        r = h[0] / h[1]
        return [(2 + r) / 2, -r / 2]
    h0, h1, h2 = h[0], h[1], h[2]
    t1 = (1 - h0 / (3 * (h0 + h1)) * (h0 * (h0 + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return [(2 + h0 / h1) / 2 + t1, -(h0 / h1) / 2 - (1 + h1 / h2) * t1, t1 * h1 / h2]
    h3 = h[3]
    t2 = (
        ((1 - h0 / (3 * (h0 + h1))) / 2 + (1 - h0 / (2 * (h0 + h1))) * h0 / (6 * (h0 + h1 + h2)))
        * (h0 * (h0 + h1) * (h0 + h1 + h2))
        / (h1 * (h1 + h2) * (h1 + h2 + h3))
    )
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return [
        (2 + h0 / h1) / 2 + t1 + t2,
        -(h0 / h1) / 2 - (1 + h1 / h2) * t1 - (1 + h1 / h2 + q) * t2,
        t1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * t2,
        -t2 * q * h1 / h2,
    ]


@torch.no_grad()
def sample_ipndm_v(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    """iPNDM with coefficients derived for the actual, non-uniform step sizes."""
    extra_args = extra_args or {}
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones(x), **extra_args)
        report(callback, x, i, sigma, denoised)
        d = (x - denoised) / sigma
        order = min(max_order, i + 1)
        dt = sigma_next - sigma
        if sigma_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + dt * d
        else:
            steps = [dt] + [sigmas[i - k] - sigmas[i - k - 1] for k in range(order - 1)]
            coeffs = _ipndm_v_coeffs(order, steps)
            x_next = x + dt * sum(c * v for c, v in zip(coeffs, [d, *reversed(history)], strict=False))
        _push(history, d, max_order - 1)
        x = x_next
    return x


def _deis_coefficients(sigmas: torch.Tensor, max_order: int, n: int = 10000) -> list[list[float]]:
    """DEIS 'tAB' weights (Zhang & Chen 2022): integrals of Lagrange polynomials in VP time against d sigma.

    Sigma is mapped to the time of a VP-SDE fitted to the EDM range (0.002, 80), as the
    published solver does; the integral is a Riemann sum over n points.
    """
    eps_s, s_min, s_max = 1e-3, 0.002, 80.0
    beta_d = 2 * (np.log(s_min**2 + 1) / eps_s - np.log(s_max**2 + 1)) / (eps_s - 1)
    beta_min = np.log(s_max**2 + 1) - 0.5 * beta_d
    s = sigmas.double().cpu()
    t_steps = ((beta_min**2 + 2 * beta_d * (s**2 + 1).log()).sqrt() - beta_min) / beta_d
    beta_0, beta_1 = beta_min, beta_d + beta_min
    coeffs: list[list[float]] = []
    for i in range(len(t_steps) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            coeffs.append([])
            continue
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        taus = torch.linspace(float(t_cur), float(t_next), n, dtype=torch.float64)
        dtau = (t_next - t_cur) / n
        alpha = torch.exp(-0.5 * taus**2 * (beta_1 - beta_0) - taus * beta_0)
        d_log_alpha = -(taus * (beta_1 - beta_0) + beta_0)
        integrand = -0.5 * d_log_alpha / torch.sqrt(alpha * (1 - alpha))  # = d sigma / d tau
        prev = [t_steps[i - k] for k in range(order)]
        row = []
        for j in range(order):
            poly = torch.ones_like(taus)
            for k in range(order):
                if k != j:
                    poly = poly * (taus - prev[k]) / (prev[j] - prev[k])
            row.append(float(torch.sum(integrand * poly) * dtau))
        coeffs.append(row)
    return coeffs


@torch.no_grad()
def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=3):
    """Diffusion Exponential Integrator Sampler, multistep in eps with precomputed weights."""
    extra_args = extra_args or {}
    coeffs = _deis_coefficients(sigmas, max_order)
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones(x), **extra_args)
        report(callback, x, i, sigma, denoised)
        d = (x - denoised) / sigma
        order = 1 if sigma_next <= 0 else min(max_order, i + 1)
        if order == 1:
            x_next = x + (sigma_next - sigma) * d
        else:
            x_next = x + sum(c * v for c, v in zip(coeffs[i], [d, *reversed(history)], strict=False))
        _push(history, d, max_order - 1)
        x = x_next
    return x


def _res_multistep(model, x, sigmas, extra_args, callback, s_noise, noise_sampler, eta, cfg_pp):
    """RES second-order multistep (Zhang et al. 2023, arXiv:2308.02157), optionally ancestral and/or CFG++."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    old_denoised = old_sigma_down = None
    for i in range(len(sigmas) - 1):
        if cfg_pp:
            denoised, uncond = denoise_with_uncond(model, x, sigmas[i] * ones(x), extra_args)
        else:
            denoised = uncond = model(x, sigmas[i] * ones(x), **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, x, i, sigmas[i], denoised)
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = (
                lam(sigmas[i]),
                lam(old_sigma_down),
                lam(sigma_down),
                lam(sigmas[i - 1]),
            )
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = torch.expm1(-h) / (-h)
            phi2 = (phi1 - 1.0) / (-h)
            b1 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2 / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - uncond)
            x = sigma_of(h) * x + h * (b1 * uncond + b2 * old_denoised)
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised, old_sigma_down = uncond, sigma_down
    return x


@torch.no_grad()
def sample_res_multistep(
    model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None
):
    return _res_multistep(
        model, x, sigmas, extra_args, callback, s_noise, noise_sampler, eta=0.0, cfg_pp=False
    )


@torch.no_grad()
def sample_res_multistep_cfg_pp(
    model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None
):
    return _res_multistep(
        model, x, sigmas, extra_args, callback, s_noise, noise_sampler, eta=0.0, cfg_pp=True
    )


@torch.no_grad()
def sample_res_multistep_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    return _res_multistep(
        model, x, sigmas, extra_args, callback, s_noise, noise_sampler, eta=eta, cfg_pp=False
    )


@torch.no_grad()
def sample_res_multistep_ancestral_cfg_pp(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    return _res_multistep(
        model, x, sigmas, extra_args, callback, s_noise, noise_sampler, eta=eta, cfg_pp=True
    )


@torch.no_grad()
def sample_gradient_estimation(
    model, x, sigmas, extra_args=None, callback=None, disable=None, ge_gamma=2.0, cfg_pp=False
):
    """Euler plus a correction extrapolating the change of the derivative (Permenter & Yuan 2024)."""
    extra_args = extra_args or {}
    old_d = None
    for i in range(len(sigmas) - 1):
        if cfg_pp:
            denoised, uncond = denoise_with_uncond(model, x, sigmas[i] * ones(x), extra_args)
            d = to_d(x, sigmas[i], uncond)
        else:
            denoised = model(x, sigmas[i] * ones(x), **extra_args)
            d = to_d(x, sigmas[i], denoised)
        report(callback, x, i, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


@torch.no_grad()
def sample_gradient_estimation_cfg_pp(
    model, x, sigmas, extra_args=None, callback=None, disable=None, ge_gamma=2.0
):
    return sample_gradient_estimation(model, x, sigmas, extra_args, callback, disable, ge_gamma, cfg_pp=True)
