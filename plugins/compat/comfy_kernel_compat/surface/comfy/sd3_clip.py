"""ComfyUI's ``comfy.sd3_clip``: SD3 text encoder classes, as isinstance stand-ins until an SD3 family provides them."""

from comfy_kernel_compat.reexport import reexport, stand_ins

reexport(globals(), [], optional=["families.sd3.text"])
stand_ins(globals(), object, ["SD3ClipModel", "SD3Tokenizer", "T5XXLModel", "T5XXLTokenizer"],
          "text encoders here are TextEncoderModel objects")
