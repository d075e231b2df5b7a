"""ComfyUI's ``comfy.conds``: the conditioning tensors handed to the network (CONDRegular, CONDCrossAttn ...)."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["model.conds"])
