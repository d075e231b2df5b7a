"""ComfyUI's ``comfy.sdxl_clip``: the SDXL tokenizer of core_nodes; model classes are isinstance stand-ins."""

from comfy_kernel_compat.reexport import reexport, stand_ins

reexport(globals(), ["families.sd.text_xl"])
stand_ins(globals(), object, ["SDXLClipG", "SDXLClipModel", "SDXLRefinerClipModel", "SDXLClipGTokenizer",
                              "StableCascadeClipModel"], "text encoders here are TextEncoderModel objects")
