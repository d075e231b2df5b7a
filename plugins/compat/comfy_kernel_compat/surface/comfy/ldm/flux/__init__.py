"""ComfyUI's ``comfy.ldm.flux``: the Flux transformer code of core_nodes' flux family."""

from comfy_kernel_compat.reexport import submodule_getattr

__getattr__ = submodule_getattr(__name__)
