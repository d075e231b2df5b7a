"""ComfyUI's ``comfy.clip_vision``: CLIP vision encoders (``load``, ``ClipVisionModel``) of core_nodes.

``clip_preprocess`` is core_nodes' image preprocessing for the encoders (resize,
center crop, normalise), under ComfyUI's name.
"""

from comfy_kernel_compat.reexport import reexport

reexport(globals(), ["model.clip_vision"], optional=["components.clip_vision"],
         aliases={"clip_preprocess": "preprocess"})
