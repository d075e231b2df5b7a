"""LoRA loader nodes: patch a MODEL (and CLIP) with a LoRA file's low-rank weight deltas.

The file is read (memory-mapped) into weight patches that the patched clones
carry; the model manager applies them when it loads the weights, as a
separate entry, so the unpatched model stays valid for every other branch of
the graph. The same file at the same strength maps to the same loaded model
across prompts. Recognised formats: see ``model/lora.py``.
"""

from __future__ import annotations

import threading
from typing import Any

from . import context
from .common import NodeDef

_LOADED: dict[str, Any] = {}
_LOCK = threading.Lock()


def _read_lora(path: str) -> tuple[dict[str, Any], str, dict[str, str]]:
    """The LoRA's tensors (the last file read is kept), its file identity and its safetensors metadata."""
    from ..model.files import file_identity, file_metadata, read_state_dict

    identity = file_identity(path)
    with _LOCK:
        cached = _LOADED.get(identity)
        if cached is None:
            _LOADED.clear()
            cached = _LOADED[identity] = (read_state_dict(path), file_metadata(path))
    return cached[0], identity, cached[1]


def apply_lora(model: Any, clip: Any, lora_name: str, strength_model: float,
               strength_clip: float) -> tuple[Any, Any]:
    """The patched clones; the model carries the file's metadata as its ``lora_metadata`` attachment (what
    GetICLoRAParameters reads), as in ComfyUI."""
    from ..model.lora import load_lora_for_models

    lora, identity, metadata = _read_lora(context.full_path("loras", lora_name))
    new_model, new_clip = load_lora_for_models(model, clip, lora, strength_model, strength_clip,
                                               identity=f"lora:{identity}")
    if new_model is not None and metadata:
        new_model.set_attachments("lora_metadata", metadata)
    return new_model, new_clip


class LoraLoader:
    DESCRIPTION = "Applies a LoRA to the diffusion model and the text encoder."
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The patched diffusion model.", "The patched text encoder.")
    FUNCTION = "load_lora"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        strength = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model to patch."}),
            "clip": ("CLIP", {"tooltip": "The text encoder to patch."}),
            "lora_name": (context.list_files("loras"), {"tooltip": "The LoRA file."}),
            "strength_model": ("FLOAT", {**strength, "tooltip": "How strongly to change the diffusion model."}),
            "strength_clip": ("FLOAT", {**strength, "tooltip": "How strongly to change the text encoder."}),
        }}

    def load_lora(self, model: Any, clip: Any, lora_name: str, strength_model: float,
                  strength_clip: float) -> tuple[Any, Any]:
        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        return apply_lora(model, clip, lora_name, strength_model, strength_clip)


class LoraLoaderModelOnly:
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "lora_name": (context.list_files("loras"),),
                             "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0,
                                                          "step": 0.01})}}

    def load_lora_model_only(self, model: Any, lora_name: str, strength_model: float) -> tuple[Any]:
        if strength_model == 0:
            return (model,)
        return (apply_lora(model, None, lora_name, strength_model, 0)[0],)


NODES = [
    NodeDef("LoraLoader", LoraLoader, "Load LoRA", "nodes"),
    NodeDef("LoraLoaderModelOnly", LoraLoaderModelOnly, "LoraLoaderModelOnly", "nodes"),
]
