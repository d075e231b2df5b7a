"""ComfyUI's ``comfy.taesd``: the tiny autoencoder of core_nodes (``taesd``); ``taehv`` is not implemented."""

from comfy_kernel_compat.reexport import submodule_getattr

__getattr__ = submodule_getattr(__name__)
