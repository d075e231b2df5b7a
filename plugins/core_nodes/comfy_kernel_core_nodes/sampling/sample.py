"""The KSampler / KSamplerAdvanced entry point: noise, schedule, guidance, sampler."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .cfg import CFGDenoiser, ModelFn, ResultHook
from .model_sampling import DiscreteEpsSampling
from .noise import prepare_noise
from .registry import get_sampler
from .schedulers import ksampler_sigmas

SD15_LATENT_SCALE = 0.18215

ProgressCallback = Callable[[int, torch.Tensor, torch.Tensor, int], None]


def truncate_sigmas(
    sigmas: torch.Tensor, start_step: int | None, last_step: int | None, force_full_denoise: bool
) -> torch.Tensor | None:
    """KSamplerAdvanced's step window; None when start_step leaves nothing to do."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:
            return None
        sigmas = sigmas[start_step:]
    return sigmas


def prepare_mask(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A [H, W] / [B, H, W] mask resized to the latent and broadcast over channels and batch."""
    mask = F.interpolate(
        mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(),
        size=(shape[2], shape[3]),
        mode="bilinear",
    )
    mask = torch.cat([mask] * shape[1], dim=1)
    if mask.shape[0] < shape[0]:
        mask = mask.repeat(-(-shape[0] // mask.shape[0]), 1, 1, 1)
    return mask[: shape[0]]


class _InpaintDenoiser:
    """Keeps the unmasked region pinned to the (re-noised) input latent at every evaluation."""

    def __init__(
        self,
        inner: CFGDenoiser,
        latent: torch.Tensor,
        noise: torch.Tensor,
        mask: torch.Tensor,
        ms: DiscreteEpsSampling,
    ) -> None:
        self.inner, self.latent, self.noise, self.mask, self.ms = inner, latent, noise, mask, ms

    def _blend_in(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        kept = self.noise * s + self.latent
        return x * self.mask + kept * (1.0 - self.mask)

    def _blend_out(self, out: torch.Tensor) -> torch.Tensor:
        return out * self.mask + self.latent * (1.0 - self.mask)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kw: Any) -> torch.Tensor:
        return self._blend_out(self.inner(self._blend_in(x, sigma), sigma))

    def with_uncond(
        self, x: torch.Tensor, sigma: torch.Tensor, **kw: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        den, unc = self.inner.with_uncond(self._blend_in(x, sigma), sigma)
        return self._blend_out(den), self._blend_out(unc)


def run_sampler(
    model: Callable[..., torch.Tensor],
    sampler_name: str,
    noise: torch.Tensor,
    latent_scaled: torch.Tensor,
    sigmas: torch.Tensor,
    seed: int,
    model_sampling: DiscreteEpsSampling,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """Start x from noise per the full/partial-denoise rule, run the named sampler, return its raw result."""
    x = model_sampling.noise_scaling(sigmas[0], noise, latent_scaled, model_sampling.is_max_denoise(sigmas))
    total = len(sigmas) - 1
    k_callback = None
    if callback is not None:

        def k_callback(info: dict[str, Any]) -> None:
            callback(info["i"], info["denoised"], info["x"], total)

    fn = get_sampler(sampler_name)
    out = fn(model, x, sigmas, extra_args={"seed": seed}, callback=k_callback, disable=True)
    return model_sampling.inverse_noise_scaling(sigmas[-1], out)


def sample(
    model_fn: ModelFn,
    positive: torch.Tensor,
    negative: torch.Tensor | None,
    latent: torch.Tensor,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    denoise: float = 1.0,
    *,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
    add_noise: bool = True,
    batch_index: Sequence[int] | None = None,
    noise_mask: torch.Tensor | None = None,
    callback: ProgressCallback | None = None,
    on_model_result: ResultHook | None = None,
    model_sampling: DiscreteEpsSampling | None = None,
    latent_scale: float = SD15_LATENT_SCALE,
    sigmas: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoise a raw (unscaled) LATENT ``samples`` tensor as KSampler does; returns a raw latent.

    ``model_fn(x, sigma, context) -> denoised`` evaluates the model on a batch
    (x in sampler space, sigma of shape [B], context = conditioning rows).
    KSampler: defaults. KSamplerAdvanced: ``add_noise``, ``start_step``,
    ``last_step`` and ``force_full_denoise`` (= not return_with_leftover_noise),
    with denoise 1. ``callback(step, x0, x, total_steps)`` is called once per
    step for previews and progress; ``on_model_result`` once per model
    evaluation with cond/uncond/guided predictions.
    """
    ms = model_sampling or DiscreteEpsSampling()
    latent = latent.float()
    if add_noise:
        noise = prepare_noise(latent, seed, batch_index)
    else:
        noise = torch.zeros(latent.size(), dtype=latent.dtype, layout=latent.layout, device="cpu")
    if sigmas is None:
        sigmas = ksampler_sigmas(ms, scheduler, sampler_name, steps, denoise)
    sigmas = truncate_sigmas(sigmas, start_step, last_step, force_full_denoise)
    if sigmas is None or len(sigmas) == 0:
        return latent
    device = latent.device
    noise = noise.to(device)
    scaled = latent * latent_scale if torch.count_nonzero(latent) > 0 else latent
    model: Any = CFGDenoiser(model_fn, positive, negative, cfg, on_result=on_model_result)
    if noise_mask is not None:
        mask = prepare_mask(noise_mask.to(device), latent.shape)
        inpaint_noise = noise
        if sampler_name == "ddim":
            inpaint_noise = torch.randn(noise.shape, generator=torch.manual_seed(seed + 1), device="cpu").to(
                device
            )
        model = _InpaintDenoiser(model, scaled, inpaint_noise, mask, ms)
    out = run_sampler(model, sampler_name, noise, scaled, sigmas.to(device), seed, ms, callback)
    return out / latent_scale
