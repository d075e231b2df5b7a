"""Every sampler on an analytic problem: Gaussian data, whose ideal denoiser and exact answer are known.

Data x0 ~ N(mu, s^2) per element. Under VE noise the ideal denoiser is
D(x, sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu), and the probability-flow
ODE maps x_T = mu + sqrt(s^2 + sigma_T^2) z exactly to mu + s z. ODE samplers
must land there; stochastic ones must produce the right distribution.
"""

from __future__ import annotations

import pytest
import torch

from comfy_kernel_core_nodes.families.sd.models import SD15
from comfy_kernel_core_nodes.model.base import BaseModel, ModelType, WeightsSource, model_sampling
from comfy_kernel_core_nodes.model.conds import CONDCrossAttn
from comfy_kernel_core_nodes.model.patcher import ModelPatcher
from comfy_kernel_core_nodes.sampling import SAMPLER_NAMES, get_sampler
from comfy_kernel_core_nodes.sampling import sample as comfy_sample
from comfy_kernel_core_nodes.sampling.guider import convert_cond, process_conds, sampling_function
from comfy_kernel_core_nodes.sampling.ksampler import KSampler

MU, S = 0.5, 1.0
MS = model_sampling(None, ModelType.EPS)
STOCHASTIC = {
    "euler_ancestral", "euler_ancestral_cfg_pp", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
}  # fmt: skip


def ideal_denoiser(x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    s2 = sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2
    return MU + S**2 / (S**2 + s2) * (x - MU)


class AnalyticModel(BaseModel):
    """An SD1.5-shaped model whose "network" is the ideal denoiser; it records its batch sizes."""

    def __init__(self) -> None:
        weights = WeightsSource(key=f"analytic-{id(self)}", read=lambda device: {},
                                build=lambda sd: torch.nn.Identity(), keys=frozenset(), size=0)
        super().__init__(SD15({}), ModelType.EPS, weights)
        self.batches: list[int] = []

    def extra_conds(self, cross_attn=None, **kwargs):
        return {"c_crossattn": CONDCrossAttn(cross_attn)}

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kw):
        self.batches.append(x.shape[0])
        return ideal_denoiser(x, t)


def cond(value: float = 1.0) -> list:
    return [[torch.full((1, 2, 3), value), {}]]


def guided_model(net: BaseModel, x: torch.Tensor, cfg: float):
    """A sampler's ``model``: ComfyUI's guidance (sampling_function) over ``net``."""
    conds = process_conds(net, x, {"positive": convert_cond(cond(1.0)), "negative": convert_cond(cond(0.0))}, "cpu")

    def model(x, sigma, model_options=None, seed=None, **kwargs):
        return sampling_function(net, x, sigma, conds["negative"], conds["positive"], cfg, model_options or {}, seed)

    return model


def sigmas_for(name: str, steps: int) -> torch.Tensor:
    return KSampler(ModelPatcher(AnalyticModel()), steps, "cpu", name, "karras").sigmas


def run(name: str, steps: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    z = torch.randn((2, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    sigmas = sigmas_for(name, steps)
    x = MU + torch.sqrt(S**2 + sigmas[0] ** 2) * z
    # Guidance with identical cond/uncond predictions exercises the CFG path (incl. CFG++) exactly.
    model = guided_model(AnalyticModel(), x, cfg=3.0)
    seen: list[int] = []
    out = get_sampler(name)(model, x, sigmas, extra_args={"seed": 1, "model_options": {}},
                            callback=lambda d: seen.append(d["i"]))
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


def ksample(model, latent, steps, cfg, sampler, scheduler="karras", denoise=1.0, seed=5, **kw):
    """What common_ksampler does: seeded noise (zeros with disable_noise), then comfy.sample.sample."""
    noise = torch.zeros_like(latent) if kw.get("disable_noise") else comfy_sample.prepare_noise(latent, seed)
    return comfy_sample.sample(model, noise, steps, cfg, sampler, scheduler, cond(), cond(), latent,
                               denoise=denoise, seed=seed, **kw)


def test_split_advanced_run_equals_single_run():
    """KSamplerAdvanced: steps 0-3 with leftover noise, then 3-8 without new noise, equals one 8-step run."""
    model = ModelPatcher(AnalyticModel())
    latent = torch.zeros(1, 4, 4, 4)
    full = ksample(model, latent, 8, 4.0, "euler")
    first = ksample(model, latent, 8, 4.0, "euler", last_step=3, force_full_denoise=False)
    second = ksample(model, first, 8, 4.0, "euler", start_step=3, disable_noise=True)
    assert torch.allclose(full, second, atol=1e-5)
    assert torch.equal(ksample(model, latent, 8, 4.0, "euler", start_step=8), latent)


def test_cfg_one_skips_the_negative():
    net = AnalyticModel()
    model = ModelPatcher(net)
    latent = torch.zeros(2, 4, 4, 4)
    ksample(model, latent, 3, 1.0, "euler", "normal")
    assert net.batches == [2, 2, 2]
    net.batches.clear()
    ksample(model, latent, 3, 1.0, "euler_cfg_pp", "normal")
    assert net.batches == [4, 4, 4]  # CFG++ needs the unconditional prediction even at cfg 1


def test_negative_first_and_guidance_scale():
    seen = []

    class TwoValued(AnalyticModel):
        def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None,
                         **kw):
            seen.append(c_crossattn[:, 0, 0].tolist())
            return torch.cat([torch.zeros_like(x[:1]), torch.ones_like(x[1:])])

    net = TwoValued()
    x = torch.zeros(1, 4, 2, 2)
    conds = process_conds(net, x, {"positive": convert_cond(cond(1.0)), "negative": convert_cond(cond(-1.0))}, "cpu")
    out = sampling_function(net, x, torch.tensor([1.0]), conds["negative"], conds["positive"], 7.0, {})
    assert seen == [[-1.0, 1.0]]
    assert torch.all(out == 7.0)  # 0 + (1 - 0) * 7


def test_denoise_zero_returns_latent_and_mask_keeps_unmasked_region():
    model = ModelPatcher(AnalyticModel())
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ksample(model, latent, 4, 2.0, "euler", "normal", denoise=0.0), latent)
    mask = torch.zeros(8, 8)
    mask[:, 4:] = 1.0
    out = ksample(model, latent, 4, 2.0, "euler", "normal", denoise=0.5, noise_mask=mask)
    assert torch.allclose(out[..., :4], latent[..., :4], atol=1e-5)
    assert not torch.allclose(out[..., 4:], latent[..., 4:], atol=1e-3)


def test_constant_conds_holding_tensors_batch_only_when_equal():
    """A constant input holding tensors (LTXVReferenceAudio's tokens) batches with an equal one, not with another,
    instead of asking a many-valued tensor comparison for its truth."""
    from comfy_kernel_core_nodes.model.conds import CONDConstant

    tokens = torch.arange(6.0).view(1, 3, 2)
    same = CONDConstant({"tokens": tokens})
    assert same.can_concat(CONDConstant({"tokens": tokens.clone()}))
    assert not same.can_concat(CONDConstant({"tokens": tokens + 1}))
    assert not same.can_concat(CONDConstant({"tokens": tokens[:, :2]}))
    assert CONDConstant([1, 2]).can_concat(CONDConstant([1, 2])) and not CONDConstant(25).can_concat(CONDConstant(24))
