"""ComfyUI's ``comfy.taesd.taesd``: core_nodes' tiny autoencoder parts (``Block``, ``Clamp``, ``conv``,
``Encoder``, ``Decoder``) and ``TAESD`` (core_nodes' ``TinyAutoencoder``), with the same layer layout,
so packs building decoders from checkpoint keys get the same modules."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["components.taesd"], aliases={"TAESD": "TinyAutoencoder"})
