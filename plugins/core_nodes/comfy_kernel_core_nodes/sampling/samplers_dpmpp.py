"""DPM-Solver++ family (Lu et al. 2022): exponential integrators in lambda = -log sigma."""

from __future__ import annotations

import torch

from ._common import ancestral_step, lam, ones, report, seed_of, sigma_of, to_d
from .cfg import denoise_with_uncond
from .noise import brownian_noise_sampler, default_noise_sampler


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """DPM-Solver++(2S): a single-step midpoint solver, with ancestral noise."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, x, i, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = lam(sigmas[i]), lam(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (sigma_of(s) / sigma_of(t)) * x - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, sigma_of(s) * ones(x), **extra_args)
            x = (sigma_of(t_next) / sigma_of(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """CFG++ variant: steps along the unconditional prediction, then adds the guidance vector."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    for i in range(len(sigmas) - 1):
        denoised, uncond = denoise_with_uncond(model, x, sigmas[i] * ones(x), extra_args)
        guidance = denoised - uncond
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, x, i, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], uncond) * (sigma_down - sigmas[i])
        else:
            t, t_next = lam(sigmas[i]), lam(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (sigma_of(s) / sigma_of(t)) * x - (-h / 2).expm1() * uncond
            # The midpoint evaluation refreshes the unconditional prediction only.
            _, uncond = denoise_with_uncond(model, x_2, sigma_of(s) * ones(x), extra_args)
            x = (sigma_of(t_next) / sigma_of(t)) * x - (-h).expm1() * uncond
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        x = x + guidance
    return x


@torch.no_grad()
def sample_dpmpp_sde(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    r=1 / 2,
    cpu_noise=True,
):
    """DPM-Solver++ (stochastic, SDE-DPM-Solver++ 2S) with Brownian-tree noise."""
    if len(sigmas) <= 1:
        return x
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or brownian_noise_sampler(x, sigmas, seed_of(extra_args), cpu=cpu_noise)
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = lam(sigmas[i]), lam(sigmas[i + 1])
        h = lambda_t - lambda_s
        lambda_s_1 = lambda_s + r * h
        sigma_s_1 = sigma_of(lambda_s_1)
        # Step 1: to the intermediate point, ancestral split in sigma
        sd, su = ancestral_step(sigma_of(lambda_s), sigma_of(lambda_s_1), eta)
        h_ = lam(sd) - lambda_s
        x_2 = (-h_).exp() * x - (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + noise_sampler(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = model(x_2, sigma_s_1 * ones(x), **extra_args)
        # Step 2: the full step with the combined prediction
        sd, su = ancestral_step(sigma_of(lambda_s), sigma_of(lambda_t), eta)
        h_ = lam(sd) - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (-h_).exp() * x - (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_sde_gpu(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    r=1 / 2,
):
    return sample_dpmpp_sde(
        model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, r, cpu_noise=False
    )


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M): second-order multistep; first and last steps first order."""
    extra_args = extra_args or {}
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        t, t_next = lam(sigmas[i]), lam(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_of(t_next) / sigma_of(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - lam(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_of(t_next) / sigma_of(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M) with CFG++: renoise along the unconditional prediction."""
    extra_args = extra_args or {}
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised, uncond = denoise_with_uncond(model, x, sigmas[i] * ones(x), extra_args)
        report(callback, x, i, sigmas[i], denoised)
        t, t_next = lam(sigmas[i]), lam(sigmas[i + 1])
        h = t_next - t
        if old_uncond is None or sigmas[i + 1] == 0:
            mix = -torch.exp(-h) * uncond
        else:
            r = (t - lam(sigmas[i - 1])) / h
            mix = -torch.exp(-h) * uncond - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    solver_type="midpoint",
    cpu_noise=True,
):
    """DPM-Solver++(2M) SDE with Brownian-tree noise; 'midpoint' or 'heun' second-order correction."""
    if len(sigmas) <= 1:
        return x
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or brownian_noise_sampler(x, sigmas, seed_of(extra_args), cpu=cpu_noise)
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = lam(sigmas[i + 1]) - lam(sigmas[i])
            h_eta = h * (eta + 1)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                x = (
                    x
                    + noise_sampler(sigmas[i], sigmas[i + 1])
                    * sigmas[i + 1]
                    * (-2 * h * eta).expm1().neg().sqrt()
                    * s_noise
                )
        old_denoised = denoised
        h_last = h
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde_gpu(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    solver_type="midpoint",
):
    return sample_dpmpp_2m_sde(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        eta,
        s_noise,
        noise_sampler,
        solver_type,
        cpu_noise=False,
    )


@torch.no_grad()
def sample_dpmpp_2m_sde_heun(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    return sample_dpmpp_2m_sde(
        model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, "heun"
    )


@torch.no_grad()
def sample_dpmpp_2m_sde_heun_gpu(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    return sample_dpmpp_2m_sde(
        model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, "heun", cpu_noise=False
    )


@torch.no_grad()
def sample_dpmpp_3m_sde(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    cpu_noise=True,
):
    """DPM-Solver++(3M) SDE: third-order multistep from two past predictions."""
    if len(sigmas) <= 1:
        return x
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or brownian_noise_sampler(x, sigmas, seed_of(extra_args), cpu=cpu_noise)
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = lam(sigmas[i + 1]) - lam(sigmas[i])
            h_eta = h * (eta + 1)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + (-h_eta).expm1().neg() * denoised
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            if eta > 0 and s_noise > 0:
                x = (
                    x
                    + noise_sampler(sigmas[i], sigmas[i + 1])
                    * sigmas[i + 1]
                    * (-2 * h * eta).expm1().neg().sqrt()
                    * s_noise
                )
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde_gpu(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    return sample_dpmpp_3m_sde(
        model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, cpu_noise=False
    )
