"""ComfyUI's ``comfy.controlnet``: ControlNet, T2I-Adapter and control-LoRA objects of core_nodes.

ComfyUI's classes for model families core_nodes has no ControlNets for
(``ControlNetSD35``, ``ControlLoraOps``) are stand-ins for ``isinstance``
checks and subclassing; no loaded control is an instance of them.
"""

from comfy_kernel_compat.reexport import reexport, stand_ins

reexport(globals(), ["model.controlnet"])
stand_ins(globals(), globals()["ControlNet"], ["ControlNetSD35"], "no SD3.5 ControlNet is loaded here")
stand_ins(globals(), object, ["ControlLoraOps"], "control-LoRA layers here are core_nodes' own")
