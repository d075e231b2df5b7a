"""``comfy.ldm.modules.diffusionmodules``: the SD UNet (openaimodel) and its helpers (util)."""

from comfy_kernel_compat.reexport import submodule_getattr

__getattr__ = submodule_getattr(__name__)
