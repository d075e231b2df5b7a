"""UniPC (Zhao et al. 2023): unified predictor-corrector multistep solver, data prediction.

The solver runs in the variance-preserving parameterisation (x_vp = x / sqrt(1 + sigma^2))
with sigma itself as the time variable; the step to sigma = 0 is replaced by a step to
sigma = 0.001. Variants: 'bh1' (B(h) = h) and 'bh2' (B(h) = e^h - 1).
"""

from __future__ import annotations

import torch

from ._common import append_dims


def _log_alpha(sigma: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.log(1 / (sigma * sigma + 1))


def _alpha(sigma: torch.Tensor) -> torch.Tensor:
    return torch.exp(_log_alpha(sigma))


def _std(sigma: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(1.0 - torch.exp(2.0 * _log_alpha(sigma)))


def _lambda(sigma: torch.Tensor) -> torch.Tensor:
    log_alpha = _log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def _weighted(rhos: torch.Tensor, d1s: torch.Tensor) -> torch.Tensor:
    """sum_k rhos[k] * d1s[:, k] for d1s of shape (B, K, ...)."""
    return (d1s * rhos.view(1, -1, *([1] * (d1s.ndim - 2)))).sum(dim=1)


class _UniPC:
    def __init__(self, model, extra_args: dict, variant: str) -> None:
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"unknown UniPC variant {variant!r}")
        self.model, self.extra_args, self.variant = model, extra_args, variant

    def data_prediction(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 from the VE denoiser, expressed through its eps as the VP solver expects."""
        sigma = append_dims(t, x.ndim)
        x_ve = x * ((sigma**2 + 1.0) ** 0.5)
        eps = (x_ve - self.model(x_ve, t, **self.extra_args)) / sigma
        return (x - append_dims(_std(t), x.ndim) * eps) / append_dims(_alpha(t), x.ndim)

    def update(self, x, model_prev, t_prev, t, order: int, use_corrector: bool):
        t_prev_0, model_prev_0 = t_prev[-1], model_prev[-1]
        lambda_prev_0, lambda_t = _lambda(t_prev_0), _lambda(t)
        sigma_prev_0, sigma_t, alpha_t = _std(t_prev_0), _std(t), _alpha(t)
        h = lambda_t - lambda_prev_0

        rks, d1s = [], []
        for i in range(1, order):
            rk = ((_lambda(t_prev[-(i + 1)]) - lambda_prev_0) / h)[0]
            rks.append(rk)
            d1s.append((model_prev[-(i + 1)] - model_prev_0) / rk)
        rks.append(torch.ones((), dtype=h.dtype))
        rks_t = torch.stack([torch.as_tensor(r, dtype=h.dtype) for r in rks])

        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        rows, b = [], []
        factorial = 1
        for i in range(1, order + 1):
            rows.append(torch.pow(rks_t, i - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        r_mat, b_vec = torch.stack(rows), torch.stack(b)

        d1_stack = torch.stack(d1s, dim=1) if d1s else None
        rhos_p = None
        if d1_stack is not None:
            rhos_p = (
                torch.tensor([0.5], dtype=h.dtype)
                if order == 2
                else torch.linalg.solve(r_mat[:-1, :-1], b_vec[:-1])
            )

        base = (
            append_dims(sigma_t / sigma_prev_0, x.ndim) * x
            - append_dims(alpha_t * h_phi_1, x.ndim) * model_prev_0
        )
        pred_res = _weighted(rhos_p, d1_stack) if d1_stack is not None else 0
        x_t = base - append_dims(alpha_t * b_h, x.ndim) * pred_res

        model_t = None
        if use_corrector:
            rhos_c = torch.tensor([0.5], dtype=h.dtype) if order == 1 else torch.linalg.solve(r_mat, b_vec)
            model_t = self.data_prediction(x_t, t)
            corr_res = _weighted(rhos_c[:-1], d1_stack) if d1_stack is not None else 0
            x_t = base - append_dims(alpha_t * b_h, x.ndim) * (
                corr_res + rhos_c[-1] * (model_t - model_prev_0)
            )
        return x_t, model_t

    def sample(self, x: torch.Tensor, timesteps: torch.Tensor, order: int, callback) -> torch.Tensor:
        steps = len(timesteps) - 1
        batch = x.shape[0]
        for step_index in range(steps):
            if step_index == 0:
                vec_t = timesteps[0].expand(batch)
                model_prev, t_prev = [self.data_prediction(x, vec_t)], [vec_t]
            elif step_index < order:
                vec_t = timesteps[step_index].expand(batch)
                x, model_x = self.update(x, model_prev, t_prev, vec_t, step_index, use_corrector=True)
                model_prev.append(model_x if model_x is not None else self.data_prediction(x, vec_t))
                t_prev.append(vec_t)
            else:
                last = step_index + (2 if step_index == steps - 1 else 1)
                for step in range(step_index, last):
                    vec_t = timesteps[step].expand(batch)
                    step_order = min(order, steps + 1 - step)
                    x, model_x = self.update(
                        x, model_prev, t_prev, vec_t, step_order, use_corrector=step != steps
                    )
                    model_prev, t_prev = model_prev[1:] + model_prev[-1:], t_prev[1:] + [vec_t]
                    if step < steps:
                        model_prev[-1] = model_x if model_x is not None else self.data_prediction(x, vec_t)
            if callback is not None:
                callback(
                    {
                        "x": x,
                        "i": step_index,
                        "sigma": timesteps[step_index],
                        "sigma_hat": timesteps[step_index],
                        "denoised": model_prev[-1],
                    }
                )
        return x


@torch.no_grad()
def sample_unipc(model, x, sigmas, extra_args=None, callback=None, disable=None, variant: str = "bh1"):
    extra_args = extra_args or {}
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001
    x = x / torch.sqrt(1.0 + timesteps[0] ** 2.0)
    order = min(3, len(timesteps) - 2)
    x = _UniPC(model, extra_args, variant).sample(x, timesteps, order, callback)
    return x / _alpha(timesteps[-1])


@torch.no_grad()
def sample_unipc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=None):
    return sample_unipc(model, x, sigmas, extra_args, callback, disable, variant="bh2")
