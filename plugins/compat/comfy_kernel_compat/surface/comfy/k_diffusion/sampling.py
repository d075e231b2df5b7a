"""``comfy.k_diffusion.sampling``: ``sample_*`` functions and sigma schedules from core_nodes.

``from comfy.k_diffusion.sampling import sample_euler`` returns core_nodes'
implementation (same ``(model, x, sigmas, extra_args, callback, disable)``
call); schedules map to core_nodes' schedulers.
"""

from __future__ import annotations

import importlib
from typing import Any

_SCHEDULES = {"get_sigmas_karras": "karras", "get_sigmas_exponential": "exponential",
              "get_sigmas_kl_optimal": "kl_optimal"}


def __getattr__(name: str) -> Any:
    try:
        registry = importlib.import_module("comfy_kernel_core_nodes.sampling.registry")
    except ImportError as exc:
        raise AttributeError(f"comfy.k_diffusion.sampling.{name} needs the core_nodes plugin ({exc})") from None
    if name in _SCHEDULES:
        schedulers = importlib.import_module("comfy_kernel_core_nodes.sampling.schedulers")
        return getattr(schedulers, _SCHEDULES[name])
    if name in ("default_noise_sampler", "BrownianTreeNoiseSampler"):
        return getattr(importlib.import_module("comfy_kernel_core_nodes.sampling.noise"), name)
    for module, attr in registry._TABLE.values():
        if attr == name:
            return getattr(importlib.import_module(f"comfy_kernel_core_nodes.sampling.{module}"), attr)
    raise AttributeError(f"module 'comfy.k_diffusion.sampling' has no attribute {name!r}")
