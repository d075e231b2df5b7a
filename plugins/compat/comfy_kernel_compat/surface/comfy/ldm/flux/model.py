"""ComfyUI's ``comfy.ldm.flux.model``: ``Flux`` (the network class loaded Flux models are) and ``FluxParams``."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["families.flux.model"])
