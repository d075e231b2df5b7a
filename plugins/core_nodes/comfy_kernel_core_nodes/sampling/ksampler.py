"""Sampler objects and the KSampler schedule logic (ComfyUI's ``KSAMPLER`` / ``KSampler``).

A SAMPLER value is a :class:`KSAMPLER`: a k-diffusion style function
``fn(model, x, sigmas, extra_args, callback, disable, **options)`` plus its
options. ``KSAMPLER.sample`` starts x from the noise (scaled for the first
sigma), runs the function on the inpainting-aware model and undoes the noise
scaling. :class:`KSampler` is what the KSampler nodes use: it turns
(steps, scheduler, denoise) into sigmas and runs a CFG guider.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .guider import KSamplerX0Inpaint
from .guider import sample as guided_sample
from .registry import KSAMPLER_NAMES, SAMPLER_NAMES, get_sampler
from .schedulers import DISCARD_PENULTIMATE_SIGMA_SAMPLERS, SCHEDULER_NAMES, calculate_sigmas


class Sampler:
    def sample(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    def max_denoise(self, model_wrap: Any, sigmas: torch.Tensor) -> bool:
        """Whether the schedule starts at the model's largest sigma (a full denoise from pure noise)."""
        max_sigma = float(model_wrap.inner_model.model_sampling.sigma_max)
        sigma = float(sigmas[0])
        return math.isclose(max_sigma, sigma, rel_tol=1e-05) or sigma > max_sigma


class KSAMPLER(Sampler):
    def __init__(self, sampler_function: Any, extra_options: dict[str, Any] | None = None,
                 inpaint_options: dict[str, Any] | None = None) -> None:
        self.sampler_function = sampler_function
        self.extra_options = dict(extra_options or {})
        self.inpaint_options = dict(inpaint_options or {})

    def sample(self, model_wrap: Any, sigmas: torch.Tensor, extra_args: dict[str, Any], callback: Any,
               noise: torch.Tensor, latent_image: torch.Tensor | None = None,
               denoise_mask: torch.Tensor | None = None, disable_pbar: bool = False) -> torch.Tensor:
        extra_args["denoise_mask"] = denoise_mask
        model_k = KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image = latent_image
        if self.inpaint_options.get("random", False):
            generator = torch.manual_seed(extra_args.get("seed", 41) + 1)
            model_k.noise = torch.randn(noise.shape, generator=generator, device="cpu").to(noise.dtype).to(
                noise.device)
        else:
            model_k.noise = noise
        model_sampling = model_wrap.inner_model.model_sampling
        x = model_sampling.noise_scaling(sigmas[0], noise, latent_image, self.max_denoise(model_wrap, sigmas))
        k_callback = None
        total = len(sigmas) - 1
        if callback is not None:
            k_callback = lambda d: callback(d["i"], d["denoised"], d["x"], total)  # noqa: E731
        samples = self.sampler_function(model_k, x, sigmas, extra_args=extra_args, callback=k_callback,
                                        disable=disable_pbar, **self.extra_options)
        return model_sampling.inverse_noise_scaling(sigmas[-1], samples)


def ksampler(sampler_name: str, extra_options: dict[str, Any] | None = None,
             inpaint_options: dict[str, Any] | None = None) -> KSAMPLER:
    return KSAMPLER(get_sampler(sampler_name), extra_options, inpaint_options)


def sampler_object(name: str) -> KSAMPLER:
    """The SAMPLER of a KSampler sampler name (ddim is Euler with its own inpainting noise)."""
    if name == "ddim":
        return ksampler("euler", inpaint_options={"random": True})
    return ksampler(name)


class KSampler:
    SCHEDULERS = SCHEDULER_NAMES
    SAMPLERS = SAMPLER_NAMES
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS = set(DISCARD_PENULTIMATE_SIGMA_SAMPLERS)

    def __init__(self, model: Any, steps: int, device: Any, sampler: str | None = None,
                 scheduler: str | None = None, denoise: float | None = None,
                 model_options: dict[str, Any] | None = None) -> None:
        self.model = model
        self.device = device
        self.scheduler = scheduler if scheduler in self.SCHEDULERS else self.SCHEDULERS[0]
        self.sampler = sampler if sampler in self.SAMPLERS else self.SAMPLERS[0]
        self.denoise = denoise
        self.model_options = model_options if model_options is not None else {}
        self.set_steps(steps, denoise)

    def calculate_sigmas(self, steps: int) -> torch.Tensor:
        discard = self.sampler in self.DISCARD_PENULTIMATE_SIGMA_SAMPLERS
        sigmas = calculate_sigmas(self.model.get_model_object("model_sampling"), self.scheduler,
                                  steps + 1 if discard else steps)
        return torch.cat([sigmas[:-2], sigmas[-1:]]) if discard else sigmas

    def set_steps(self, steps: int, denoise: float | None = None) -> None:
        """Sigmas for ``steps`` steps; with denoise < 1 the tail of a longer schedule (img2img)."""
        self.steps = steps
        if denoise is None or denoise > 0.9999:
            self.sigmas = self.calculate_sigmas(steps).to(self.device)
        elif denoise <= 0.0:
            self.sigmas = torch.FloatTensor([])
        else:
            self.sigmas = self.calculate_sigmas(int(steps / denoise)).to(self.device)[-(steps + 1):]

    def sample(self, noise: torch.Tensor, positive: list, negative: list, cfg: float,
               latent_image: torch.Tensor | None = None, start_step: int | None = None,
               last_step: int | None = None, force_full_denoise: bool = False,
               denoise_mask: torch.Tensor | None = None, sigmas: torch.Tensor | None = None, callback: Any = None,
               disable_pbar: bool = False, seed: int | None = None) -> torch.Tensor:
        sigmas = self.sigmas if sigmas is None else sigmas
        if last_step is not None and last_step < len(sigmas) - 1:
            sigmas = sigmas[: last_step + 1]
            if force_full_denoise:
                sigmas[-1] = 0
        if start_step is not None:
            if start_step < len(sigmas) - 1:
                sigmas = sigmas[start_step:]
            else:
                return latent_image if latent_image is not None else torch.zeros_like(noise)
        return guided_sample(self.model, noise, positive, negative, cfg, self.device,
                             sampler_object(self.sampler), sigmas, self.model_options, latent_image=latent_image,
                             denoise_mask=denoise_mask, callback=callback, disable_pbar=disable_pbar, seed=seed)


__all__ = ["KSAMPLER", "KSAMPLER_NAMES", "KSampler", "SAMPLER_NAMES", "SCHEDULER_NAMES", "Sampler", "ksampler",
           "sampler_object"]
