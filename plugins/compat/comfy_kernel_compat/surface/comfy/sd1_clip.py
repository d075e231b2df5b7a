"""ComfyUI's ``comfy.sd1_clip``: the SD1 tokenizer and CLIP text model of core_nodes.

``SD1Tokenizer`` and the CLIP text network are core_nodes'; ComfyUI's wrapper
model classes (``SD1ClipModel``, ``SDClipModel``, ``ClipTokenWeightEncoder``)
are stand-ins for ``isinstance`` checks: text encoders here are
``comfy_kernel_core_nodes.model.clip.TextEncoderModel`` objects.
"""

from comfy_kernel_compat.reexport import reexport, stand_ins

reexport(globals(), ["components.clip.tokenizer", "components.clip.text_model", "components.clip.prompt",
                     "families.sd.text"])
reexport(globals(), [], aliases={"escape_important": "_escape", "unescape_important": "_unescape"})
stand_ins(globals(), object, ["ClipTokenWeightEncoder", "SDClipModel", "SD1ClipModel"],
          "text encoders here are TextEncoderModel objects")
