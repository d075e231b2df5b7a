"""ComfyUI's ``comfy.samplers``: core_nodes' guider, KSampler, sampler objects and schedules.

The classes and functions are core_nodes' own (``comfy.samplers.CFGGuider is
comfy_kernel_core_nodes.sampling.guider.CFGGuider``), so a pack that
subclasses ``CFGGuider``, builds a ``KSampler``, calls ``sampling_function``
or wraps ``calc_cond_batch`` works on the objects the core nodes use.
"""

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

from comfy_kernel_compat.reexport import reexport


class SchedulerHandler(NamedTuple):
    """A schedule function and whether it takes the model sampling object (else sigma_min/max)."""

    handler: Callable[..., Any]
    use_ms: bool = True


def _no_hooks(*args: Any, **kwargs: Any) -> None:
    """Without core_nodes' conditioning hooks, conds carry no hooks: nothing to prepare."""


def cast_to_load_options(model_options: dict[str, Any], device: Any = None, dtype: Any = None) -> None:
    """Patches are moved with the model by the model manager; nothing to cast here."""


reexport(globals(), ["sampling.schedulers", "sampling.registry", "sampling.guider", "sampling.ksampler"],
         optional=["sampling.hooks"],
         aliases={"normal_scheduler": "normal", "simple_scheduler": "simple", "ddim_scheduler": "ddim_uniform",
                  "beta_scheduler": "beta", "linear_quadratic_schedule": "linear_quadratic",
                  "kl_optimal_scheduler": "kl_optimal"})

for _name in ("preprocess_conds_hooks", "filter_registered_hooks_on_conds"):
    globals().setdefault(_name, _no_hooks)
globals().setdefault("get_total_hook_groups_in_conds", lambda conds: 0)

SCHEDULER_HANDLERS = {
    "simple": SchedulerHandler(globals()["simple"]),
    "sgm_uniform": SchedulerHandler(lambda ms, steps: globals()["normal"](ms, steps, sgm=True)),
    "karras": SchedulerHandler(globals()["karras"], use_ms=False),
    "exponential": SchedulerHandler(globals()["exponential"], use_ms=False),
    "ddim_uniform": SchedulerHandler(globals()["ddim_uniform"]),
    "beta": SchedulerHandler(globals()["beta"]),
    "normal": SchedulerHandler(globals()["normal"]),
    "linear_quadratic": SchedulerHandler(globals()["linear_quadratic"]),
    "kl_optimal": SchedulerHandler(globals()["kl_optimal"], use_ms=False),
}


class _RebindableSamplers(ModuleType):
    """``comfy.samplers.sampling_function = f`` changes the function ``CFGGuider.predict_noise`` calls.

    As in ComfyUI, where the guider looks the name up in this module:
    AnimateDiff-Evolved swaps in its own sampling function (context windows)
    while it samples and puts the original back after. The rebinding is
    process-wide, as it is in ComfyUI.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "sampling_function":
            from comfy_kernel_core_nodes.sampling import guider

            guider.sampling_function = value


sys.modules[__name__].__class__ = _RebindableSamplers
