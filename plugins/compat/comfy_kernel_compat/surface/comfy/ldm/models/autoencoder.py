"""ComfyUI's ``comfy.ldm.models.autoencoder``: core_nodes' KL autoencoder network (``AutoencoderKL``)."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["components.kl_vae"])
