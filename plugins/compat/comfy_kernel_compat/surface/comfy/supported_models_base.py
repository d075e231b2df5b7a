"""ComfyUI's ``comfy.supported_models_base``: the model configuration base class (core_nodes' ModelConfig)."""

from typing import Any

from comfy_kernel_compat.reexport import reexport


class ClipTarget:
    """A text encoder: its tokenizer and model classes (ComfyUI's ``ClipTarget``)."""

    def __init__(self, tokenizer: Any, clip: Any):
        self.clip = clip
        self.tokenizer = tokenizer
        self.params: dict[str, Any] = {}


reexport(globals(), ["model.detection"], aliases={"BASE": "ModelConfig"})
