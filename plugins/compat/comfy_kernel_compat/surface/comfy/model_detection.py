"""ComfyUI's ``comfy.model_detection``: which model family a state dict holds (core_nodes' detection)."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["model.detection"])
