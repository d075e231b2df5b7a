"""``comfy.text_encoders.sd3_clip``: the same names as :mod:`comfy.sd3_clip`."""

from comfy.sd3_clip import *  # noqa: F403
from comfy.sd3_clip import SD3ClipModel, SD3Tokenizer, T5XXLModel, T5XXLTokenizer  # noqa: F401
