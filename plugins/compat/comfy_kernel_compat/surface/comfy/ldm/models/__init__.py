"""``comfy.ldm.models``: the autoencoder network of core_nodes."""

from comfy_kernel_compat.reexport import submodule_getattr

__getattr__ = submodule_getattr(__name__)
