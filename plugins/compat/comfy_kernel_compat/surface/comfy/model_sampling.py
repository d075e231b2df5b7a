"""ComfyUI's ``comfy.model_sampling``: core_nodes' prediction types and noise schedules."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["model.model_sampling"])
