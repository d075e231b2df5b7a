"""ComfyUI's ``comfy.k_diffusion.sampling``: every ``sample_*`` function of core_nodes and the helpers.

The sampler functions are core_nodes' own (same ``(model, x, sigmas,
extra_args, callback, disable, **options)`` call). The schedule functions
keep k-diffusion's signatures (``n``, ``device``) around core_nodes' schedules.
"""

from typing import Any

from comfy_kernel_compat.reexport import reexport


def _on(sigmas: Any, device: Any) -> Any:
    return sigmas.to(device) if device is not None else sigmas


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: Any = "cpu") -> Any:
    from comfy_kernel_core_nodes.sampling.schedulers import karras

    return _on(karras(n, float(sigma_min), float(sigma_max), rho), device)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float, device: Any = "cpu") -> Any:
    from comfy_kernel_core_nodes.sampling.schedulers import exponential

    return _on(exponential(n, float(sigma_min), float(sigma_max)), device)


def get_sigmas_kl_optimal(n: int, sigma_min: float, sigma_max: float, device: Any = "cpu") -> Any:
    from comfy_kernel_core_nodes.sampling.schedulers import kl_optimal

    return _on(kl_optimal(n, float(sigma_min), float(sigma_max)), device)


def get_sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0,
                               device: Any = "cpu") -> Any:
    import math

    import torch

    ramp = torch.linspace(1, 0, n, device=device) ** rho
    sigmas = torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def append_zero(x: Any) -> Any:
    return x.new_zeros([1]) if x.numel() == 0 else __import__("torch").cat([x, x.new_zeros([1])])


def get_sigmas_vp(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3,
                  device: Any = "cpu") -> Any:
    """The variance-preserving schedule of Song et al. (2021)."""
    import torch

    t = torch.linspace(1, eps_s, n, device=device)
    return append_zero(torch.sqrt(torch.exp(beta_d * t ** 2 / 2 + beta_min * t) - 1))


def get_sigmas_laplace(n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5,
                       device: Any = "cpu") -> Any:
    """Laplace-distributed log-sigmas between sigma_max and sigma_min."""

    import torch

    epsilon = 1e-5
    x = torch.linspace(0, 1, n, device=device)
    clamp = lambda v: torch.clamp(v, min=sigma_min, max=sigma_max)  # noqa: E731
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + epsilon)
    return append_zero(clamp(torch.exp(lmb)))


def sigma_to_half_log_snr(sigma: Any, model_sampling: Any) -> Any:
    """log(alpha/sigma): for flow (CONST) models alpha = 1 - sigma, else alpha = 1."""
    from comfy_kernel_core_nodes.model.model_sampling import CONST

    if isinstance(model_sampling, CONST):
        return sigma.logit().neg()
    return sigma.log().neg()


def half_log_snr_to_sigma(half_log_snr: Any, model_sampling: Any) -> Any:
    from comfy_kernel_core_nodes.model.model_sampling import CONST

    if isinstance(model_sampling, CONST):
        return half_log_snr.neg().sigmoid()
    return half_log_snr.neg().exp()


def get_ancestral_step(sigma_from: Any, sigma_to: Any, eta: float = 1.0) -> tuple[Any, Any]:
    """``(sigma_down, sigma_up)`` for an ancestral step from ``sigma_from`` to ``sigma_to``."""
    from comfy_kernel_core_nodes.sampling._common import ancestral_step

    return ancestral_step(sigma_from, sigma_to, eta)


reexport(globals(), ["sampling._common", "sampling.noise", "sampling.dpm_solver", "sampling.uni_pc",
                     "sampling.samplers_euler", "sampling.samplers_dpmpp", "sampling.samplers_multistep",
                     "sampling.samplers_sde"])
