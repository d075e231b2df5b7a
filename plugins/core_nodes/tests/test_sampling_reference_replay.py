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
from _sampling_refs import KSamplerRun, ksampler_runs, max_rel, needs_reference  # noqa: E402

from comfy_kernel_core_nodes.sampling import DiscreteEpsSampling, combine_cfg, run_sampler, sample

MS = DiscreteEpsSampling()
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


@needs_reference
@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_sampler_replay(run: KSamplerRun):
    model = CapturedModel(run)
    sigmas = run.npy("sigmas")
    out = run_sampler(
        model, run.params["sampler_name"], run.npy("noise"), run.npy("latent_in_scaled"), sigmas, run.seed, MS
    )
    assert model.calls == run.evals
    assert max_rel(out, run.npy("samples_scaled")) <= TOL


@needs_reference
@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_cfg_combination(run: KSamplerRun):
    cfg = run.params["cfg"]
    got = combine_cfg(run.npy("step_cond_denoised"), run.npy("step_uncond_denoised"), cfg)
    assert max_rel(got, run.npy("step_cfg_denoised")) <= 1e-6


@needs_reference
@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_full_ksampler_path(run: KSamplerRun):
    """sample() end to end: noise, schedule, latent scaling, batched CFG (negative first), output scaling."""
    captured = CapturedModel(run)
    cond, uncond = run.npy("step_cond_denoised"), run.npy("step_uncond_denoised")
    pos, neg = torch.full((1, 77, 8), 1.0), torch.full((1, 77, 8), -1.0)
    steps_seen = []

    def model_fn(x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b = x.shape[0] // 2
        assert torch.equal(x[:b], x[b:]) and torch.equal(sigma[:b], sigma[b:])
        assert (context[:b] == -1).all() and (context[b:] == 1).all()
        i = captured.check(x[:b], sigma[:b])
        return torch.cat([uncond[i], cond[i]])

    p = run.params
    out = sample(
        model_fn, pos, neg, run.latent_raw, p["seed"], p["steps"], p["cfg"], p["sampler_name"], p["scheduler"], p["denoise"],
        callback=lambda step, x0, x, total: steps_seen.append((step, total)),
    )  # fmt: skip
    assert captured.calls == run.evals
    assert max_rel(out, run.npy("samples_scaled") / 0.18215) <= TOL
    assert [s for s, _ in steps_seen] == list(range(p["steps"]))
    assert all(total == p["steps"] for _, total in steps_seen)
