"""Replay each captured KSampler run with a fake model that returns the captured predictions.

No UNet is involved: at evaluation i the fake model checks that it is called with
the captured x and sigma and answers with the captured denoised prediction, so
every sampler update rule, the schedule, the noise and the CFG plumbing are
checked against the reference within its tolerance (1e-4 relative).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # shared helpers, whatever pytest's import mode
from _sampling_refs import KSamplerRun, ksampler_runs, max_rel  # noqa: E402

from comfy_kernel_core_nodes.families.sd.models import SD15  # noqa: E402
from comfy_kernel_core_nodes.model.base import BaseModel, ModelType, WeightsSource, model_sampling  # noqa: E402
from comfy_kernel_core_nodes.model.patcher import ModelPatcher  # noqa: E402
from comfy_kernel_core_nodes.sampling import combine_cfg  # noqa: E402
from comfy_kernel_core_nodes.sampling import sample as comfy_sample  # noqa: E402
from comfy_kernel_core_nodes.sampling.ksampler import sampler_object  # noqa: E402

MS = model_sampling(None, ModelType.EPS)
RUNS = ksampler_runs()
TOL = 1e-4


class CapturedModel:
    """Answers evaluation i with step_cfg_denoised[i], after checking its inputs."""

    def __init__(self, run: KSamplerRun) -> None:
        self.x, self.sigma = run.npy("step_x"), run.npy("step_sigma")
        self.denoised = run.npy("step_cfg_denoised")
        self.calls = 0
        self.worst_x = 0.0

    def check(self, x: torch.Tensor, sigma: torch.Tensor) -> int:
        i = self.calls
        assert i < len(self.x), "more model evaluations than captured"
        assert torch.allclose(sigma.reshape(-1).float(), self.sigma[i], rtol=1e-5, atol=0), (
            i,
            sigma,
            self.sigma[i],
        )
        self.worst_x = max(self.worst_x, max_rel(x, self.x[i]))
        assert self.worst_x <= TOL, f"x at evaluation {i} differs by {self.worst_x:.2e}"
        self.calls += 1
        return i

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        return self.denoised[self.check(x, sigma)].clone()


class Guided:
    """What a SAMPLER drives: a guider answering with the captured guided predictions."""

    def __init__(self, captured: CapturedModel) -> None:
        self.captured = captured
        self.inner_model = BaseModel(SD15({}), ModelType.EPS)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, model_options=None, seed=None) -> torch.Tensor:
        return self.captured(x, sigma)


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_sampler_replay(run: KSamplerRun):
    model = CapturedModel(run)
    out = sampler_object(run.params["sampler_name"]).sample(
        Guided(model), run.npy("sigmas"), {"seed": run.seed, "model_options": {}}, None, run.npy("noise"),
        run.npy("latent_in_scaled"))
    assert model.calls == run.evals
    assert max_rel(out, run.npy("samples_scaled")) <= TOL


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_cfg_combination(run: KSamplerRun):
    cfg = run.params["cfg"]
    got = combine_cfg(run.npy("step_cond_denoised"), run.npy("step_uncond_denoised"), cfg)
    assert max_rel(got, run.npy("step_cfg_denoised")) <= 1e-6


class ReplayNet(BaseModel):
    """An SD1.5 model whose network answers with the captured cond/uncond predictions, checking its batch."""

    def __init__(self, captured: CapturedModel, run: KSamplerRun) -> None:
        weights = WeightsSource(key=f"replay-{id(self)}", read=lambda device: {},
                                build=lambda sd: torch.nn.Identity(), keys=frozenset(), size=0)
        super().__init__(SD15({}), ModelType.EPS, weights)
        self.captured = captured
        self.cond, self.uncond = run.npy("step_cond_denoised"), run.npy("step_uncond_denoised")

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kw):
        b = x.shape[0] // 2
        assert torch.equal(x[:b], x[b:]) and torch.equal(t[:b], t[b:])
        assert (c_crossattn[:b] == -1).all() and (c_crossattn[b:] == 1).all()
        assert transformer_options["cond_or_uncond"] == [1, 0]
        i = self.captured.check(x[:b], t[:b])
        return torch.cat([self.uncond[i], self.cond[i]])


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_full_ksampler_path(run: KSamplerRun):
    """comfy.sample.sample end to end: noise, schedule, latent scaling, batched CFG (negative first), output."""
    captured = CapturedModel(run)
    model = ModelPatcher(ReplayNet(captured, run))
    positive = [[torch.full((1, 77, 8), 1.0), {}]]
    negative = [[torch.full((1, 77, 8), -1.0), {}]]
    steps_seen = []
    p = run.params
    noise = comfy_sample.prepare_noise(run.latent_raw, p["seed"])
    out = comfy_sample.sample(
        model, noise, p["steps"], p["cfg"], p["sampler_name"], p["scheduler"], positive, negative, run.latent_raw,
        denoise=p["denoise"], callback=lambda step, x0, x, total: steps_seen.append((step, total)), seed=p["seed"],
    )
    assert captured.calls == run.evals
    assert max_rel(out, run.npy("samples_scaled") / 0.18215) <= TOL
    assert [s for s, _ in steps_seen] == list(range(p["steps"]))
    assert all(total == p["steps"] for _, total in steps_seen)
