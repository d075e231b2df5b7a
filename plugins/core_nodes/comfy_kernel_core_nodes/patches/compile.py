"""torch.compile of the diffusion model, as an ``apply_model`` wrapper (ComfyUI's TorchCompileModel).

The network is loaded lazily and may be a different object per load (weight
patches, eviction), so compilation happens at the first evaluation of each
loaded network and is kept for that object; during the evaluation the bound
model's ``diffusion_model`` is the compiled module.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

COMPILE_KEY = "torch.compile"
TORCH_COMPILE_KWARGS = "torch_compile_kwargs"


def torch_compile_wrapper(compile_kwargs: dict[str, Any]) -> Callable[..., Any]:
    compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
        import torch

        model = executor.class_obj
        network = model.diffusion_model
        module = compiled.get(network)
        if module is None:
            module = torch.compile(network, **compile_kwargs)
            compiled[network] = module
        model.diffusion_model = module
        try:
            return executor(*args, **kwargs)
        finally:
            model.diffusion_model = network

    return wrapper


def set_torch_compile_wrapper(model: Any, backend: str, options: dict[str, str] | None = None,
                              mode: str | None = None, fullgraph: bool = False, dynamic: bool | None = None) -> None:
    """Compile ``model``'s diffusion model with these ``torch.compile`` arguments when it runs (on this clone)."""
    from ..model.extension import WrappersMP

    kwargs = {"backend": backend, "options": options, "mode": mode, "fullgraph": fullgraph, "dynamic": dynamic}
    model.remove_wrappers_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY)
    model.add_wrapper_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY, torch_compile_wrapper(kwargs))
    model.model_options[TORCH_COMPILE_KWARGS] = kwargs
