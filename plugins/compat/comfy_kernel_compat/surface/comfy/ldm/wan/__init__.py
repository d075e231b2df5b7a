"""ComfyUI's ``comfy.ldm.wan``: core_nodes' Wan transformer (``model``) and causal video VAE (``vae``)."""

from comfy_kernel_compat.reexport import submodule_getattr

__getattr__ = submodule_getattr(__name__)
