"""Sampling for Stable Diffusion 1.x: noise, sigma schedules, classifier-free guidance and
every KSampler sampler, reproducing ComfyUI's numerics.

The model stays abstract: callers provide ``model_fn(x, sigma, context) -> denoised``
(see :func:`model_sampling.eps_to_denoiser` to build one from an eps-predicting UNet).
"""

from .cfg import CFGDenoiser, combine_cfg
from .model_sampling import DiscreteEpsSampling, eps_to_denoiser
from .noise import BrownianTreeNoiseSampler, default_noise_sampler, prepare_noise
from .registry import KSAMPLER_NAMES, SAMPLER_NAMES, get_sampler
from .sample import run_sampler, sample, truncate_sigmas
from .schedulers import SCHEDULER_NAMES, calculate_sigmas, ksampler_sigmas

__all__ = [
    "BrownianTreeNoiseSampler",
    "CFGDenoiser",
    "DiscreteEpsSampling",
    "KSAMPLER_NAMES",
    "SAMPLER_NAMES",
    "SCHEDULER_NAMES",
    "calculate_sigmas",
    "combine_cfg",
    "default_noise_sampler",
    "eps_to_denoiser",
    "get_sampler",
    "ksampler_sigmas",
    "prepare_noise",
    "run_sampler",
    "sample",
    "truncate_sigmas",
]
