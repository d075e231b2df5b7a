"""ComfyUI's ``comfy.ldm.lumina``: the NextDiT code of core_nodes' Lumina 2 family."""

from comfy_kernel_compat.reexport import submodule_getattr

__getattr__ = submodule_getattr(__name__)
