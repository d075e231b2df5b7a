"""ComfyUI's ``comfy.lora``: LoRA key maps, loading and the weight-patch arithmetic of core_nodes."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["model.weights", "model.lora"])
