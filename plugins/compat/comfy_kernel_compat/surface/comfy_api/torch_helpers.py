"""ComfyUI's ``comfy_api.torch_helpers``: ``torch.compile`` of a model's diffusion network.

core_nodes' own wrapper (the one its TorchCompileModel node installs): an
``APPLY_MODEL`` wrapper on the clone, compiling each loaded network at its
first evaluation. Compiling other sub-modules than the whole diffusion model
(``keys``) is not supported.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["patches.compile"])
_core_set = globals()["set_torch_compile_wrapper"]


def set_torch_compile_wrapper(model: Any, backend: str = "inductor", options: dict | None = None,
                              mode: str | None = None, fullgraph: bool = False, dynamic: bool | None = None,
                              keys: list[str] | None = None, *args: Any, **kwargs: Any) -> None:
    """Compile ``model``'s diffusion model when it runs (on this clone)."""
    if keys is not None and list(keys) != ["diffusion_model"]:
        raise ValueError(f"torch.compile of parts of the diffusion model ({keys}) is not supported on comfy-kernel")
    _core_set(model, backend, options, mode, fullgraph, dynamic)


def remove_torch_compile_wrapper(model: Any) -> None:
    from comfy_kernel_core_nodes.model.extension import WrappersMP

    model.remove_wrappers_with_key(WrappersMP.APPLY_MODEL, globals()["COMPILE_KEY"])
    model.model_options.pop(globals()["TORCH_COMPILE_KWARGS"], None)
