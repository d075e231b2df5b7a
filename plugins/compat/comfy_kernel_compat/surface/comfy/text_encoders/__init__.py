"""ComfyUI's ``comfy.text_encoders``: per-model text encoder modules."""

from comfy_kernel_compat.reexport import submodule_getattr

__getattr__ = submodule_getattr(__name__)
