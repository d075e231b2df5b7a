"""ComfyUI's ``comfy.cldm.cldm``: ``ControlNet`` is core_nodes' SD ControlNet network (``ControlNetModel``)."""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["families.sd.controlnet"], aliases={"ControlNet": "ControlNetModel"})
