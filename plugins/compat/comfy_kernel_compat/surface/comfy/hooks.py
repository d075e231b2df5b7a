"""ComfyUI's ``comfy.hooks``: conditioning hooks (HookGroup, WeightHook, keyframes) of core_nodes."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["model.hooks"])
