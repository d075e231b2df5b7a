"""ComfyUI's ``comfy.samplers`` on the core_nodes plugin's sampling package.

Names are imported from core_nodes when first read, so a pack that only
reads ``KSampler.SAMPLERS`` for its INPUT_TYPES does not pay for torch at
start-up more than core_nodes itself does. Without core_nodes installed the
names are missing (AttributeError), as they would be for any absent feature.
"""

from __future__ import annotations

import importlib
from typing import Any

_SOURCES = {
    "SAMPLER_NAMES": "comfy_kernel_core_nodes.sampling.registry",
    "KSAMPLER_NAMES": "comfy_kernel_core_nodes.sampling.registry",
    "SCHEDULER_NAMES": "comfy_kernel_core_nodes.sampling.schedulers",
    "calculate_sigmas": "comfy_kernel_core_nodes.sampling.schedulers",
}


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is not None:
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError as exc:
            raise AttributeError(f"comfy.samplers.{name} needs the core_nodes plugin ({exc})") from None
    raise AttributeError(f"module 'comfy.samplers' has no attribute {name!r}")


class _Lazy:
    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj: Any, owner: type) -> Any:
        return list(__getattr__(self.name))


class KSAMPLER:
    """A sampler function with its options, as ``sampler_object`` returns it."""

    def __init__(self, sampler_function: Any, extra_options: dict[str, Any] | None = None,
                 inpaint_options: dict[str, Any] | None = None):
        self.sampler_function = sampler_function
        self.extra_options = extra_options or {}
        self.inpaint_options = inpaint_options or {}


def ksampler(sampler_name: str, extra_options: dict[str, Any] | None = None,
             inpaint_options: dict[str, Any] | None = None) -> KSAMPLER:
    registry = importlib.import_module("comfy_kernel_core_nodes.sampling.registry")
    return KSAMPLER(registry.get_sampler(sampler_name), extra_options, inpaint_options)


def sampler_object(name: str) -> KSAMPLER:
    return ksampler(name)


class KSampler:
    """Holds ``SAMPLERS``/``SCHEDULERS`` (the combo lists packs reuse); sampling runs in the KSampler nodes."""

    SAMPLERS = _Lazy("SAMPLER_NAMES")
    SCHEDULERS = _Lazy("SCHEDULER_NAMES")
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("comfy.samplers.KSampler objects are not available on comfy-kernel; "
                                  "use nodes.common_ksampler or the KSampler node")
