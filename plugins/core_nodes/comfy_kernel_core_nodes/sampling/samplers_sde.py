"""Stochastic solvers in data prediction: ER-SDE, SEEDS-2/3 and SA-Solver.

For the VE parameterisation used here alpha_t = 1 and the half log-SNR is
lambda = -log sigma, which simplifies the published VP formulas.
"""

from __future__ import annotations

import math

import torch

from ._common import lam, ones, report, seed_of, sigma_of
from .noise import default_noise_sampler


def _phi_1(h: torch.Tensor) -> torch.Tensor:
    """h * phi_1(h) = e^h - 1."""
    return torch.expm1(h)


def _phi_2(h: torch.Tensor) -> torch.Tensor:
    """h * phi_2(h) = (e^h - 1 - h) / h."""
    return (torch.expm1(h) - h) / h


def _er_noise_scaler(v: torch.Tensor) -> torch.Tensor:
    return v * ((v**0.3).exp() + 10.0)


@torch.no_grad()
def sample_er_sde(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_noise=1.0,
    noise_sampler=None,
    noise_scaler=None,
    max_stage=3,
):
    """Extended reverse-time SDE solver (Cui et al. 2023, VP ER-SDE-Solver-3), up to third order."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    scaler = noise_scaler or _er_noise_scaler
    points = 200.0
    idx = torch.arange(0, points, dtype=torch.float32, device=x.device)
    er_lambdas = sigmas  # sigma_t / alpha_t with alpha_t = 1
    old_denoised = old_denoised_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            ls, lt = er_lambdas[i], er_lambdas[i + 1]
            r = scaler(lt) / scaler(ls)
            x = r * x + (1 - r) * denoised
            if stage >= 2:
                dt = lt - ls
                step = -dt / points
                pos = lt + idx * step
                scaled = scaler(pos)
                s = torch.sum(1 / scaled) * step
                denoised_d = (denoised - old_denoised) / (ls - er_lambdas[i - 1])
                x = x + (dt + s * scaler(lt)) * denoised_d
                if stage >= 3:
                    s_u = torch.sum((pos - ls) / scaled) * step
                    denoised_u = (denoised_d - old_denoised_d) / ((ls - er_lambdas[i - 2]) / 2)
                    x = x + ((dt**2) / 2 + s_u * scaler(lt)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                amount = (lt**2 - ls**2 * r**2).sqrt().nan_to_num(nan=0.0)
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * amount
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_seeds_2(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    r=0.5,
    solver_type="phi_1",
):
    """SEEDS-2 (Gonzalez et al. 2023): two-stage stochastic exponential solver."""
    if solver_type not in {"phi_1", "phi_2"}:
        raise ValueError("solver_type must be 'phi_1' or 'phi_2'")
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    inject = eta > 0 and s_noise > 0
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = lam(sigmas[i]), lam(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        sigma_s_1 = sigma_of(torch.lerp(lambda_s, lambda_t, r))
        x_2 = sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x - _phi_1(-r * h_eta) * denoised
        if inject:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise_sampler(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * ones(x), **extra_args)
        decay = sigmas[i + 1] / sigmas[i] * (-h * eta).exp()
        if solver_type == "phi_1":
            x = decay * x - _phi_1(-h_eta) * torch.lerp(denoised, denoised_2, fac)
        else:
            b2 = _phi_2(-h_eta) / r
            b1 = _phi_1(-h_eta) - b2
            x = decay * x - (b1 * denoised + b2 * denoised_2)
        if inject:
            seg = (r - 1) * h * eta
            sde_noise = sde_noise * seg.exp() + seg.mul(2).expm1().neg().sqrt() * noise_sampler(
                sigma_s_1, sigmas[i + 1]
            )
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


@torch.no_grad()
def sample_seeds_3(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    r_1=1.0 / 3,
    r_2=2.0 / 3,
):
    """SEEDS-3: three-stage variant; the noise of the sub-steps is chained so the total stays Brownian."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    inject = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = lam(sigmas[i]), lam(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        sigma_s_1 = sigma_of(torch.lerp(lambda_s, lambda_t, r_1))
        sigma_s_2 = sigma_of(torch.lerp(lambda_s, lambda_t, r_2))

        x_2 = sigma_s_1 / sigmas[i] * (-r_1 * h * eta).exp() * x - _phi_1(-r_1 * h_eta) * denoised
        if inject:
            sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise_sampler(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * ones(x), **extra_args)

        a3_2 = r_2 / r_1 * _phi_2(-r_2 * h_eta)
        a3_1 = _phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s_2 / sigmas[i] * (-r_2 * h * eta).exp() * x - (a3_1 * denoised + a3_2 * denoised_2)
        if inject:
            seg = (r_1 - r_2) * h * eta
            sde_noise = sde_noise * seg.exp() + seg.mul(2).expm1().neg().sqrt() * noise_sampler(
                sigma_s_1, sigma_s_2
            )
            x_3 = x_3 + sde_noise * sigma_s_2 * s_noise
        denoised_3 = model(x_3, sigma_s_2 * ones(x), **extra_args)

        b3 = _phi_2(-h_eta) / r_2
        b1 = _phi_1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - (b1 * denoised + b3 * denoised_3)
        if inject:
            seg = (r_2 - 1) * h * eta
            sde_noise = sde_noise * seg.exp() + seg.mul(2).expm1().neg().sqrt() * noise_sampler(
                sigma_s_2, sigmas[i + 1]
            )
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def _exp_integral_coeffs(s: torch.Tensor, t: torch.Tensor, order: int, tau: float) -> torch.Tensor:
    """(1 + tau^2) * integral_s^t exp((1 + tau^2)(u - t)) u^p du for p < order, by repeated integration by parts."""
    tau_mul = 1 + tau**2
    h = t - s
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    terms = t**p - s**p * (-tau_mul * h).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_fact = (p + 1).lgamma()
    log_coeff = log_fact.unsqueeze(1) - log_fact.unsqueeze(0)
    if tau > 0:
        log_coeff = log_coeff - depth * math.log(tau_mul)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (log_coeff.exp() * signs).tril() @ terms


def _sa_coeffs(sigma_next, lambdas, lambda_s, lambda_t, tau: float, simple_order_2: bool = False,
               corrector: bool = False) -> torch.Tensor:
    """SA-Solver b_i (Xue et al. 2023, eqs. 15/18): Lagrange basis through `lambdas` integrated exactly.

    ``simple_order_2`` uses the paper's simplified two-point coefficients (its appendix D) instead.
    """
    n = lambdas.shape[0]
    if simple_order_2 and n == 2:
        tau_mul = 1 + tau**2
        h = lambda_t - lambda_s
        alpha_t = sigma_next * lambda_t.exp()
        full = alpha_t * (-h * tau_mul).expm1().neg()
        # coefficients of the older and the newer prediction, in that order
        if corrector:
            newer = alpha_t * (0.5 * tau_mul * h)
            return torch.stack([full - newer, newer])
        older = alpha_t * (0.5 * tau_mul * h**2) / (lambdas[-2] - lambda_s)
        return torch.stack([older, full - older])
    integrals = _exp_integral_coeffs(lambda_s, lambda_t, n, tau)
    vander_t = torch.vander(lambdas, n, increasing=True).T
    return sigma_next * lambda_t.exp() * torch.linalg.solve(vander_t, integrals)


def _tau_interval(start_sigma: float, end_sigma: float, eta: float = 1.0):
    """Stochasticity only inside [end_sigma, start_sigma] (the middle of the trajectory)."""

    def tau(sigma) -> float:
        if eta <= 0:
            return 0.0
        sigma = float(sigma)
        return eta if start_sigma >= sigma >= end_sigma else 0.0

    return tau


def _percent_to_sigma(model, percent: float) -> float:
    """The model's sigma at a fraction of the schedule (SD1's table when the model does not say)."""
    patcher = getattr(getattr(model, "inner_model", None), "model_patcher", None)
    if patcher is not None:
        return patcher.get_model_object("model_sampling").percent_to_sigma(percent)
    from ..model.model_sampling import EPS, ModelSamplingDiscrete, combine

    return combine(ModelSamplingDiscrete, EPS).percent_to_sigma(percent)


@torch.no_grad()
def sample_sa_solver(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=False,
    tau_func=None,
    s_noise=1.0,
    noise_sampler=None,
    predictor_order=3,
    corrector_order=4,
    use_pece=False,
    simple_order_2=False,
):
    """Stochastic Adams predictor-corrector; PECE re-evaluates the model after each correction.

    Returns the corrected state: the final denoised prediction when the schedule ends at 0,
    else the state at the last sigma that was corrected (as the reference does).
    """
    if len(sigmas) <= 1:
        return x
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    lambdas = lam(sigmas)
    if tau_func is None:
        tau_func = _tau_interval(_percent_to_sigma(model, 0.2), _percent_to_sigma(model, 0.8))
    max_order = max(predictor_order, corrector_order)
    x_pred = x
    h, tau_t, noise = 0.0, 0.0, 0.0
    preds: list[torch.Tensor] = []
    lower_to_end = sigmas[-1].item() == 0
    for i in range(len(sigmas) - 1):
        denoised = model(x_pred, sigmas[i] * ones(x), **extra_args)
        report(callback, x_pred, i, sigmas[i], denoised)
        preds = (preds + [denoised])[-max_order:]
        p_order = min(predictor_order, len(preds))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(preds))
        if lower_to_end:
            p_order = min(p_order, len(sigmas) - 2 - i)
            c_order = min(c_order, len(sigmas) - 1 - i)

        if c_order == 0:
            x = x_pred
        else:
            b = _sa_coeffs(sigmas[i], lambdas[i - c_order + 1 : i + 1], lambdas[i - 1], lambdas[i], tau_t,
                           simple_order_2, corrector=True)
            corr = torch.tensordot(torch.stack(preds[-c_order:], dim=1), b, dims=([1], [0]))
            x = sigmas[i] / sigmas[i - 1] * (-(tau_t**2) * h).exp() * x + corr
            if tau_t > 0 and s_noise > 0:
                x = x + noise
            if use_pece:
                denoised = model(x, sigmas[i] * ones(x), **extra_args)
                preds[-1] = denoised

        if sigmas[i + 1] == 0:
            x = denoised
        else:
            tau_t = tau_func(sigmas[i + 1])
            b = _sa_coeffs(sigmas[i + 1], lambdas[i - p_order + 1 : i + 1], lambdas[i], lambdas[i + 1], tau_t,
                           simple_order_2)
            pred = torch.tensordot(torch.stack(preds[-p_order:], dim=1), b, dims=([1], [0]))
            h = lambdas[i + 1] - lambdas[i]
            x_pred = sigmas[i + 1] / sigmas[i] * (-(tau_t**2) * h).exp() * x + pred
            if tau_t > 0 and s_noise > 0:
                amount = sigmas[i + 1] * (-2 * tau_t**2 * h).expm1().neg().sqrt() * s_noise
                noise = noise_sampler(sigmas[i], sigmas[i + 1]) * amount
                x_pred = x_pred + noise
    return x


@torch.no_grad()
def sample_sa_solver_pece(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=False,
    tau_func=None,
    s_noise=1.0,
    noise_sampler=None,
):
    return sample_sa_solver(
        model, x, sigmas, extra_args, callback, disable, tau_func, s_noise, noise_sampler, use_pece=True
    )
