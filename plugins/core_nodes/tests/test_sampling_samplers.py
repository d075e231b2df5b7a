"""Every sampler on an analytic problem: Gaussian data, whose ideal denoiser and exact answer are known.

Data x0 ~ N(mu, s^2) per element. Under VE noise the ideal denoiser is
D(x, sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu), and the probability-flow
ODE maps x_T = mu + sqrt(s^2 + sigma_T^2) z exactly to mu + s z. ODE samplers
must land there; stochastic ones must produce the right distribution.
"""

from __future__ import annotations

import pytest
import torch

from comfy_kernel_core_nodes.sampling import (
    SAMPLER_NAMES,
    CFGDenoiser,
    DiscreteEpsSampling,
    get_sampler,
    ksampler_sigmas,
    sample,
)

MU, S = 0.5, 1.0
MS = DiscreteEpsSampling()
STOCHASTIC = {
    "euler_ancestral", "euler_ancestral_cfg_pp", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
}  # fmt: skip


def ideal_denoiser(x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    s2 = sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2
    return MU + S**2 / (S**2 + s2) * (x - MU)


def run(name: str, steps: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    z = torch.randn((2, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    sigmas = ksampler_sigmas(MS, "karras", name, steps)
    x = MU + torch.sqrt(S**2 + sigmas[0] ** 2) * z
    # Guidance with identical cond/uncond predictions exercises the CFG path (incl. CFG++) exactly.
    model = CFGDenoiser(ideal_denoiser, torch.ones(1, 3, 2), torch.zeros(1, 3, 2), cfg=3.0)
    seen: list[int] = []
    out = get_sampler(name)(model, x, sigmas, extra_args={"seed": 1}, callback=lambda d: seen.append(d["i"]))
    return out, MU + S * z, seen


def test_every_name_has_a_sampler():
    for name in SAMPLER_NAMES:
        assert callable(get_sampler(name))
    with pytest.raises(ValueError):
        get_sampler("nope")


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_sampler_converges_on_gaussian_data(name):
    out, exact, seen = run(name, 40)
    assert torch.isfinite(out).all() and seen and seen[0] == 0
    assert abs(float(out.mean()) - MU) < 0.05
    if name in STOCHASTIC:
        # Right distribution, not the ODE's point: ancestral steps with few
        # evaluations lose some variance (LCM the most, being meant for consistency models).
        low = 0.5 if name == "lcm" else 0.8
        assert low < float(out.std()) / S < 1.15
        return
    err = float((out - exact).abs().max())
    assert err < 0.2, err
    if name != "dpm_adaptive":  # adaptive ignores the step count
        coarse, _, _ = run(name, 10)
        assert err < float((coarse - exact).abs().max()) / 2


def test_split_advanced_run_equals_single_run():
    """KSamplerAdvanced: steps 0-3 with leftover noise, then 3-8 without new noise, equals one 8-step run."""
    latent = torch.zeros(1, 4, 4, 4)
    cond = torch.ones(1, 2, 3)
    args = (ideal_denoiser, cond, cond, latent, 5, 8, 4.0, "euler", "karras")
    full = sample(*args)
    first = sample(*args, last_step=3, force_full_denoise=False)
    second = sample(
        ideal_denoiser, cond, cond, first, 5, 8, 4.0, "euler", "karras", start_step=3, add_noise=False
    )
    assert torch.allclose(full, second, atol=1e-5)
    assert torch.equal(sample(*args, start_step=8), latent)


def test_cfg_one_skips_the_negative_and_hook_sees_every_call():
    batches, results = [], []

    def model_fn(x, sigma, context):
        batches.append(x.shape[0])
        return ideal_denoiser(x, sigma)

    latent = torch.zeros(2, 4, 4, 4)
    cond = torch.ones(1, 2, 3)
    sample(model_fn, cond, -cond, latent, 0, 3, 1.0, "euler", "normal", on_model_result=results.append)
    assert batches == [2, 2, 2] and len(results) == 3
    batches.clear()
    sample(model_fn, cond, -cond, latent, 0, 3, 1.0, "euler_cfg_pp", "normal")
    assert batches == [4, 4, 4]  # CFG++ needs the unconditional prediction even at cfg 1


def test_negative_first_and_guidance_scale():
    seen = []

    def model_fn(x, sigma, context):
        seen.append(context[:, 0, 0].tolist())
        return torch.cat([torch.zeros_like(x[:1]), torch.ones_like(x[1:])])

    den = CFGDenoiser(model_fn, torch.full((1, 2, 3), 1.0), torch.full((1, 3, 3), -1.0), cfg=7.0)
    out = den(torch.zeros(1, 4, 2, 2), torch.tensor([1.0]))
    assert seen == [[-1.0, 1.0]]
    assert torch.all(out == 7.0)  # 0 + (1 - 0) * 7


def test_denoise_zero_returns_latent_and_mask_keeps_unmasked_region():
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    cond = torch.ones(1, 2, 3)
    assert torch.equal(sample(ideal_denoiser, cond, cond, latent, 0, 4, 2.0, "euler", "normal", 0.0), latent)
    mask = torch.zeros(8, 8)
    mask[:, 4:] = 1.0
    out = sample(ideal_denoiser, cond, cond, latent, 0, 4, 2.0, "euler", "normal", 0.5, noise_mask=mask)
    assert torch.allclose(out[..., :4], latent[..., :4], atol=1e-5)
    assert not torch.allclose(out[..., 4:], latent[..., 4:], atol=1e-3)
