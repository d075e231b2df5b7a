"""Schedules, start noise and name lists against the captured reference runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # shared helpers, whatever pytest's import mode
from _sampling_refs import KSamplerRun, ksampler_runs, max_rel  # noqa: E402

from comfy_kernel_core_nodes.families.sd.models import SD15  # noqa: E402
from comfy_kernel_core_nodes.model.base import BaseModel, ModelType, model_sampling  # noqa: E402
from comfy_kernel_core_nodes.model.patcher import ModelPatcher  # noqa: E402
from comfy_kernel_core_nodes.sampling import (  # noqa: E402
    SAMPLER_NAMES,
    SCHEDULER_NAMES,
    calculate_sigmas,
    prepare_noise,
)
from comfy_kernel_core_nodes.sampling.ksampler import KSAMPLER, KSampler  # noqa: E402

RUNS = ksampler_runs()
MS = model_sampling(None, ModelType.EPS)


def ksampler_sigmas(scheduler: str, sampler: str, steps: int, denoise: float) -> torch.Tensor:
    """The sigmas KSampler runs for these settings on an SD1.5 model."""
    return KSampler(ModelPatcher(BaseModel(SD15({}))), steps, "cpu", sampler, scheduler, denoise).sigmas


def test_name_lists_match_ksampler_order():
    assert SCHEDULER_NAMES == [
        "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic", "kl_optimal",
    ]  # fmt: skip
    assert SAMPLER_NAMES == [
        "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
        "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
        "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
        "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
        "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
        "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
        "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
    ]  # fmt: skip


def test_sigma_table():
    assert MS.sigmas.dtype == torch.float32 and len(MS.sigmas) == 1000
    assert abs(float(MS.sigma_min) - 0.0291675) < 1e-6
    assert abs(float(MS.sigma_max) - 14.614642) < 1e-5
    t = torch.tensor([0.0, 1.0, 500.0, 999.0])
    assert torch.equal(MS.timestep(MS.sigma(t)).float(), t)


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
@pytest.mark.parametrize("steps", [1, 4, 13])
def test_every_scheduler_is_decreasing_and_ends_in_zero(scheduler, steps):
    sigmas = calculate_sigmas(MS, scheduler, steps)
    assert sigmas.dtype == torch.float32
    assert float(sigmas[-1]) == 0.0 and torch.isfinite(sigmas).all()
    assert (sigmas[:-1] > 0).all() and (sigmas[1:] <= sigmas[:-1]).all()
    if scheduler not in ("ddim_uniform", "beta"):  # stride rounding / merged duplicates change the count
        assert len(sigmas) == steps + 1


def test_documented_schedules():
    expected = {
        ("normal", "euler", 1.0): [14.61464, 2.918307, 0.932358, 0.029167, 0],
        ("karras", "euler", 1.0): [14.614643, 3.168605, 0.446919, 0.029167, 0],
        ("ddim_uniform", "ddim", 1.0): [4.116696, 1.623692, 0.698398, 0.041314, 0],
        ("simple", "uni_pc", 1.0): [14.614641, 5.087763, 2.276463, 1.160578, 0],
        ("sgm_uniform", "lcm", 1.0): [14.61464, 4.086081, 1.61558, 0.69515, 0],
        ("normal", "euler", 0.6): [2.279731, 1.162865, 0.571189, 0.029167, 0],
        ("normal", "euler", 0.5): [1.276832, 0.79126, 0.439666, 0.029167, 0],
    }
    for (scheduler, sampler, denoise), values in expected.items():
        got = ksampler_sigmas(scheduler, sampler, 4, denoise)
        assert torch.allclose(got, torch.tensor(values), rtol=2e-6, atol=1e-6), (
            scheduler,
            sampler,
            denoise,
            got,
        )


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_sigmas_match_reference(run: KSamplerRun):
    p = run.params
    got = ksampler_sigmas(p["scheduler"], p["sampler_name"], p["steps"], p["denoise"])
    ref = run.npy("sigmas")
    assert got.shape == ref.shape
    assert max_rel(got, ref) <= 1e-6


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_noise_is_bit_exact(run: KSamplerRun):
    noise = prepare_noise(run.latent_raw, run.seed)
    assert torch.equal(noise, run.npy("noise"))


def test_batch_index_noise_draws_one_item_per_index():
    generator = torch.manual_seed(7)
    items = [torch.randn([1, 4, 3, 3], generator=generator) for _ in range(4)]
    picked = prepare_noise(torch.zeros(3, 4, 3, 3), 7, batch_index=[3, 1, 3])
    assert torch.equal(picked, torch.cat([items[3], items[1], items[3]]))


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_start_noise_rule(run: KSamplerRun):
    """Full denoise scales noise by sqrt(1 + s0^2), partial denoise by s0; only non-empty latents are scaled."""
    sigmas, noise = run.npy("sigmas"), run.npy("noise")
    latent_in = run.npy("latent_in_scaled")
    expected_in = run.latent_raw * 0.18215 if torch.count_nonzero(run.latent_raw) else run.latent_raw
    assert (
        max_rel(expected_in, latent_in) <= 1e-6
        if torch.count_nonzero(latent_in)
        else torch.equal(expected_in, latent_in)
    )
    max_denoise = KSAMPLER(None).max_denoise(type("Wrap", (), {"inner_model": BaseModel(SD15({}))})(), sigmas)
    x = MS.noise_scaling(sigmas[0], noise, latent_in, max_denoise)
    assert max_rel(x, run.npy("step_x")[0]) <= 1e-6
    partial = run.workflow in ("img2img", "hires_fix") and run.params["denoise"] < 1
    assert max_denoise == (not partial and run.params["scheduler"] != "ddim_uniform")


def test_apply_model_feeds_the_network_as_documented():
    """Network input x / sqrt(sigma^2 + 1), nearest integer timestep, denoised = x - sigma * eps."""
    seen = {}

    def unet(x_in, t, context=None, **kwargs):
        seen.update(x_in=x_in, t=t, context=context)
        return torch.ones_like(x_in)

    model = BaseModel(SD15({})).bind(unet)
    x = torch.full((2, 4, 2, 2), 2.0)
    sigma = torch.tensor([3.168605, 14.614643])
    out = model.apply_model(x, sigma, c_crossattn=torch.zeros(2, 77, 8))
    assert seen["t"].tolist() == [687.0, 999.0] and seen["t"].dtype == torch.float32
    assert torch.allclose(seen["x_in"][0], 2.0 / torch.sqrt(sigma[0] ** 2 + 1))
    assert torch.allclose(out[1], 2.0 - sigma[1] * torch.ones(4, 2, 2))
