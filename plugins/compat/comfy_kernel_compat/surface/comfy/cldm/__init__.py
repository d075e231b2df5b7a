"""ComfyUI's ``comfy.cldm``: the ControlNet network of the SD family."""

from comfy_kernel_compat.reexport import submodule_getattr

__getattr__ = submodule_getattr(__name__)
