"""ComfyUI's ``comfy.ldm``: the network code packs import, from core_nodes' families."""

from comfy_kernel_compat.reexport import submodule_getattr

__getattr__ = submodule_getattr(__name__)
