"""ComfyUI's ``comfy.model_patcher``: the ModelPatcher the core nodes pass as MODEL."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["model.extension", "model.weights", "model.patcher"])

from comfy.patcher_extension import PatcherInjection, copy_nested_dicts  # noqa: E402,F401 - ComfyUI exposes them here
