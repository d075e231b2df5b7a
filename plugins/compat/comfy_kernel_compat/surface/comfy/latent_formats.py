"""ComfyUI's ``comfy.latent_formats``: every latent format core_nodes knows (scales, RGB preview factors)."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["model.latent_formats"])
