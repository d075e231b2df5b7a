"""DPM-Solver (Lu et al. 2022, arXiv:2206.00927) in its fixed-step 'fast' and adaptive forms.

Both integrate in t = -log sigma on the noise prediction and ignore the
schedule except for its end points.
"""

from __future__ import annotations

import math

import torch

from ._common import ancestral_step, seed_of
from .noise import default_noise_sampler


def _t(sigma: torch.Tensor) -> torch.Tensor:
    return -sigma.log()


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


class _PIDController:
    """PID step-size control for the adaptive solver (Söderlind's filter, arctan limiter)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.81, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error] * 3
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


class _DPMSolver:
    def __init__(self, model, extra_args, callback):
        self.model, self.extra_args, self.callback = model, extra_args, callback

    def eps(self, cache: dict, key: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if key not in cache:
            sigma = _sigma(t)
            cache[key] = (x - self.model(x, sigma * x.new_ones([x.shape[0]]), **self.extra_args)) / sigma
        return cache[key]

    def step_1(self, x, t, t_next, cache):
        h = t_next - t
        return x - _sigma(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x, t, t_next, cache, r1=1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (
            x
            - _sigma(s2) * (r2 * h).expm1() * eps
            - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        )
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return (
            x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)
        )

    def report(self, x, i, t, cache):
        if self.callback is not None:
            denoised = x - _sigma(t) * self.eps(cache, "eps", x, t)
            self.callback({"x": x, "i": i, "sigma": _sigma(t), "sigma_hat": _sigma(t), "denoised": denoised})

    def fast(self, x, t_start, t_end, nfe, eta, s_noise, noise_sampler):
        """Fixed steps uniform in t using about nfe evaluations: third-order steps, lower at the end."""
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        for i, order in enumerate(orders):
            cache: dict = {}
            t, t_next = ts[i], ts[i + 1]
            t_next_, su = t_next, 0.0
            if eta:
                sd, _ = ancestral_step(_sigma(t), _sigma(t_next), eta)
                t_next_ = torch.minimum(t_end, _t(sd))
                su = (_sigma(t_next) ** 2 - _sigma(t_next_) ** 2) ** 0.5
            self.report(x, i, t, cache)
            step = {1: self.step_1, 2: self.step_2, 3: self.step_3}[order]
            x = step(x, t, t_next_, cache)
            x = x + su * s_noise * noise_sampler(_sigma(t), _sigma(t_next))
        return x

    def adaptive(
        self,
        x,
        t_start,
        t_end,
        order,
        rtol,
        atol,
        h_init,
        pcoeff,
        icoeff,
        dcoeff,
        accept_safety,
        eta,
        s_noise,
        noise_sampler,
    ):
        """Embedded pairs (1/2 or 2/3) with error control; steps until t_end."""
        if order not in {2, 3}:
            raise ValueError("order should be 2 or 3")
        forward = t_end > t_start
        if not forward and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        h_init = abs(h_init) * (1 if forward else -1)
        atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
        s, x_prev = t_start, x
        pid = _PIDController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
        steps = 0
        while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
            cache: dict = {}
            t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
            t_, su = t, 0.0
            if eta:
                sd, _ = ancestral_step(_sigma(s), _sigma(t), eta)
                t_ = torch.minimum(t_end, _t(sd))
                su = (_sigma(t) ** 2 - _sigma(t_) ** 2) ** 0.5
            self.report(x, steps, s, cache)
            if order == 2:
                x_low = self.step_1(x, s, t_, cache)
                x_high = self.step_2(x, s, t_, cache)
            else:
                x_low = self.step_2(x, s, t_, cache, r1=1 / 3)
                x_high = self.step_3(x, s, t_, cache)
            delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            if pid.propose_step(error):
                x_prev = x_low
                x = x_high + su * s_noise * noise_sampler(_sigma(s), _sigma(t))
                s = t
            steps += 1
        return x


def _end_points(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The solver cannot reach sigma = 0: it stops at the last non-zero sigma."""
    sigma_min = sigmas[-1] if sigmas[-1] != 0 else sigmas[-2]
    if sigma_min <= 0 or sigmas[0] <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    return sigma_min, sigmas[0]


@torch.no_grad()
def sample_dpm_fast_on_sigmas(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, s_noise=1.0, noise_sampler=None
):
    """DPM-Solver-fast over the schedule's range with len(sigmas) - 1 model evaluations."""
    if len(sigmas) <= 1:
        return x
    extra_args = extra_args or {}
    sigma_min, sigma_max = _end_points(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    solver = _DPMSolver(model, extra_args, callback)
    t_start, t_end = _t(torch.as_tensor(sigma_max)), _t(torch.as_tensor(sigma_min))
    return solver.fast(x, t_start, t_end, len(sigmas) - 1, eta, s_noise, noise_sampler)


@torch.no_grad()
def sample_dpm_adaptive_on_sigmas(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    order=3,
    rtol=0.05,
    atol=0.0078,
    h_init=0.05,
    pcoeff=0.0,
    icoeff=1.0,
    dcoeff=0.0,
    accept_safety=0.81,
    eta=0.0,
    s_noise=1.0,
    noise_sampler=None,
):
    """DPM-Solver-12/23 with adaptive steps between the schedule's end points (step count ignored)."""
    if len(sigmas) <= 1:
        return x
    extra_args = extra_args or {}
    sigma_min, sigma_max = _end_points(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=seed_of(extra_args))
    solver = _DPMSolver(model, extra_args, callback)
    t_start, t_end = _t(torch.as_tensor(sigma_max)), _t(torch.as_tensor(sigma_min))
    return solver.adaptive(
        x,
        t_start,
        t_end,
        order,
        rtol,
        atol,
        h_init,
        pcoeff,
        icoeff,
        dcoeff,
        accept_safety,
        eta,
        s_noise,
        noise_sampler,
    )
