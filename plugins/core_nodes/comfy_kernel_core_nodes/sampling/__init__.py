"""Sampling: noise, sigma schedules, guidance and every KSampler sampler, reproducing ComfyUI's numerics.

- :mod:`.guider`   conditioning -> denoised predictions (calc_cond_batch, sampling_function, CFGGuider)
- :mod:`.ksampler` SAMPLER objects (KSAMPLER) and the KSampler schedule logic
- :mod:`.sample`   the high-level ``sample`` / ``sample_custom`` nodes call
- :mod:`.schedulers`, :mod:`.noise`, :mod:`.registry` and the ``samplers_*`` modules: the k-diffusion
  style samplers ``fn(model, x, sigmas, extra_args, callback, disable, **options)``
"""

from .cfg import combine_cfg
from .noise import BrownianTreeNoiseSampler, default_noise_sampler, prepare_noise
from .registry import KSAMPLER_NAMES, SAMPLER_NAMES, get_sampler
from .schedulers import SCHEDULER_NAMES, calculate_sigmas

__all__ = [
    "BrownianTreeNoiseSampler",
    "KSAMPLER_NAMES",
    "SAMPLER_NAMES",
    "SCHEDULER_NAMES",
    "calculate_sigmas",
    "combine_cfg",
    "default_noise_sampler",
    "get_sampler",
    "prepare_noise",
]
