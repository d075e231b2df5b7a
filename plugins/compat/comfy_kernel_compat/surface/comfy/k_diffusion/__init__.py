"""ComfyUI's ``comfy.k_diffusion``: the samplers of the core_nodes plugin under k-diffusion names."""

from comfy_kernel_compat.reexport import submodule_getattr

__getattr__ = submodule_getattr(__name__)
