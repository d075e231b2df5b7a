"""``comfy.ldm.modules``: attention and the SD UNet building blocks."""

from comfy_kernel_compat.reexport import submodule_getattr

__getattr__ = submodule_getattr(__name__)
