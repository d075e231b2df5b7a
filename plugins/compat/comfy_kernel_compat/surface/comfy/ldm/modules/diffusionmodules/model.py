"""ComfyUI's ``comfy.ldm.modules.diffusionmodules.model``: core_nodes' KL autoencoder blocks
(``ResnetBlock``, ``AttnBlock``, ``Downsample``, ``Upsample``, ``Encoder``, ``Decoder``), the classes a
loaded SD/SDXL/SD3/Flux VAE is made of."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["components.kl_vae"])
