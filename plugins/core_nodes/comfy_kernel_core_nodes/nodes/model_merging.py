"""Model merging and saving (ComfyUI's comfy_extras.nodes_model_merging).

Merging is lazy, as in ComfyUI: the result is a clone of the first model
carrying the second model's weights as patches (``get_key_patches`` /
``add_patches``), weighted per key; the merged weights are computed (in fp32,
rounded to the storage dtype) when the model manager loads the clone, as its
own entry. The savers write real .safetensors files in ComfyUI's layouts and
metadata (model/saving.py), named like images (``<prefix>_00001_.safetensors``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import context
from .common import NodeDef
from .save import next_counter, reserve, split_prefix

RATIO = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})
MULTIPLIER = ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01})
SKIP_CLIP = (".position_ids", ".logit_scale")


def merge_patches(target: Any, other: Any, strengths: Any, prefix: str | None = "diffusion_model.",
                  skip: tuple[str, ...] = ()) -> Any:
    """``target`` cloned with ``other``'s weights added per key as ``strengths(key) -> (patch, model)``.

    Keys with the same strengths go in one patch batch, identified by the other
    model's weights, the keys and the strengths, so re-running the same merge
    finds its merged weights already loaded (and two merges that give the same
    strengths to different blocks do not share weights).
    """
    from ..model.patcher import KeyedPatches

    merged = target.clone()
    key_patches = other.get_key_patches(prefix) if prefix is not None else other.get_key_patches()
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for key, patch in key_patches.items():
        if key.endswith(skip) and skip:
            continue
        groups.setdefault(strengths(key), {})[key] = patch
    for (strength_patch, strength_model), patches in groups.items():
        keys = hashlib.blake2b("\n".join(sorted(patches)).encode(), digest_size=8).hexdigest()
        identity = f"merge:{other.weights_key()}:{prefix}:{keys}:{strength_patch!r}:{strength_model!r}"
        merged.add_patches(KeyedPatches(patches, identity), strength_patch, strength_model)
    return merged


class ModelMergeSimple:
    CATEGORY = "advanced/model_merging"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model1": ("MODEL",), "model2": ("MODEL",), "ratio": RATIO}}

    def merge(self, model1: Any, model2: Any, ratio: float) -> tuple[Any]:
        return (merge_patches(model1, model2, lambda k: (1.0 - ratio, ratio)),)


class ModelMergeSubtract:
    CATEGORY = "advanced/model_merging"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model1": ("MODEL",), "model2": ("MODEL",), "multiplier": MULTIPLIER}}

    def merge(self, model1: Any, model2: Any, multiplier: float) -> tuple[Any]:
        return (merge_patches(model1, model2, lambda k: (-multiplier, multiplier)),)


class ModelMergeAdd:
    CATEGORY = "advanced/model_merging"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model1": ("MODEL",), "model2": ("MODEL",)}}

    def merge(self, model1: Any, model2: Any) -> tuple[Any]:
        return (merge_patches(model1, model2, lambda k: (1.0, 1.0)),)


class CLIPMergeSimple:
    CATEGORY = "advanced/model_merging"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip1": ("CLIP",), "clip2": ("CLIP",), "ratio": RATIO}}

    def merge(self, clip1: Any, clip2: Any, ratio: float) -> tuple[Any]:
        return (_merge_clip(clip1, clip2, (1.0 - ratio, ratio)),)


class CLIPMergeSubtract:
    CATEGORY = "advanced/model_merging"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip1": ("CLIP",), "clip2": ("CLIP",), "multiplier": MULTIPLIER}}

    def merge(self, clip1: Any, clip2: Any, multiplier: float) -> tuple[Any]:
        return (_merge_clip(clip1, clip2, (-multiplier, multiplier)),)


class CLIPMergeAdd:
    CATEGORY = "advanced/model_merging"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip1": ("CLIP",), "clip2": ("CLIP",)}}

    def merge(self, clip1: Any, clip2: Any) -> tuple[Any]:
        return (_merge_clip(clip1, clip2, (1.0, 1.0)),)


def _merge_clip(clip1: Any, clip2: Any, strengths: tuple[float, float]) -> Any:
    merged = clip1.clone()
    merged.patcher = merge_patches(clip1.patcher, clip2.patcher, lambda k: strengths, prefix=None, skip=SKIP_CLIP)
    return merged


class ModelMergeBlocks:
    """Merge with a ratio per block: each key takes the ratio of the longest input name it starts with."""

    CATEGORY = "advanced/model_merging"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model1": ("MODEL",), "model2": ("MODEL",), "input": RATIO, "middle": RATIO,
                             "out": RATIO}}

    @classmethod
    def ratio_names(cls) -> list[str]:
        return [k for k in cls.INPUT_TYPES()["required"] if k not in ("model1", "model2")]

    def merge(self, model1: Any, model2: Any, **kwargs: float) -> tuple[Any]:
        names = [n for n in self.ratio_names() if n in kwargs] + [n for n in kwargs if n not in self.ratio_names()]
        default = kwargs[names[0]]

        def strengths(key: str) -> tuple[float, float]:
            local = key[len("diffusion_model."):]
            ratio, longest = default, 0
            for name in names:
                if local.startswith(name) and longest < len(name):
                    ratio, longest = kwargs[name], len(name)
            return (1.0 - ratio, ratio)

        return (merge_patches(model1, model2, strengths),)


# --- saving ------------------------------------------------------------------------------------


def _disable_metadata() -> bool:
    return bool(context.option("disable_metadata", False))


def _reserve(prefix: str) -> tuple[str, str, int]:
    """Reserve ``<prefix>_<counter>_.safetensors`` in the output folder; (path, filename, counter)."""
    import os

    folder, filename, _ = split_prefix(prefix, context.output_dir(), 0, 0)
    handle, name, counter = reserve(folder, filename, next_counter(folder, filename), ext="safetensors")
    handle.close()
    return os.path.join(folder, name), filename, counter


def save_checkpoint(model: Any, clip: Any = None, vae: Any = None, clip_vision: Any = None,
                    filename_prefix: str = "checkpoints/ComfyUI", prompt: Any = None, extra_pnginfo: Any = None) -> str:
    from ..model.saving import checkpoint_metadata, save_file, state_dict_for_saving

    path, filename, counter = _reserve(filename_prefix)
    metadata, extra = checkpoint_metadata(model, f"{filename} {counter}", prompt, extra_pnginfo, _disable_metadata())
    sd = state_dict_for_saving(model, clip, vae, clip_vision)
    sd.update(extra)
    save_file(sd, path, metadata)
    return path


class CheckpointSave:
    CATEGORY = "advanced/model_merging"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",), "vae": ("VAE",),
                             "filename_prefix": ("STRING", {"default": "checkpoints/ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, model: Any, clip: Any, vae: Any, filename_prefix: str, prompt: Any = None,
             extra_pnginfo: Any = None) -> dict:
        save_checkpoint(model, clip=clip, vae=vae, filename_prefix=filename_prefix, prompt=prompt,
                        extra_pnginfo=extra_pnginfo)
        return {}


class ModelSave:
    CATEGORY = "advanced/model_merging"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "filename_prefix": ("STRING", {"default": "diffusion_models/ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, model: Any, filename_prefix: str, prompt: Any = None, extra_pnginfo: Any = None) -> dict:
        save_checkpoint(model, filename_prefix=filename_prefix, prompt=prompt, extra_pnginfo=extra_pnginfo)
        return {}


class ImageOnlyCheckpointSave:
    """A checkpoint of an image-conditioned model: diffusion model, CLIP vision and VAE."""

    CATEGORY = "advanced/model_merging"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "clip_vision": ("CLIP_VISION",), "vae": ("VAE",),
                             "filename_prefix": ("STRING", {"default": "checkpoints/ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, model: Any, clip_vision: Any, vae: Any, filename_prefix: str, prompt: Any = None,
             extra_pnginfo: Any = None) -> dict:
        save_checkpoint(model, clip_vision=clip_vision, vae=vae, filename_prefix=filename_prefix, prompt=prompt,
                        extra_pnginfo=extra_pnginfo)
        return {}


def _plain_metadata(prompt: Any, extra_pnginfo: Any, **base: str) -> dict[str, str]:
    if _disable_metadata():
        return {}
    metadata = dict(base)
    metadata["prompt"] = json.dumps(prompt) if prompt is not None else ""
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            metadata[key] = json.dumps(value)
    return metadata


#: CLIPSave writes one file per text encoder, in this order of model-key prefixes.
CLIP_PREFIXES = ("clip_l.", "clip_g.", "clip_h.", "t5xxl.", "pile_t5xl.", "mt5xl.", "umt5xxl.", "t5base.", "gemma2_2b.",
                 "llama.", "hydit_clip.", "")


class CLIPSave:
    CATEGORY = "advanced/model_merging"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip": ("CLIP",), "filename_prefix": ("STRING", {"default": "clip/ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, clip: Any, filename_prefix: str, prompt: Any = None, extra_pnginfo: Any = None) -> dict:
        from ..model.saving import save_file

        metadata = _plain_metadata(prompt, extra_pnginfo, format="pt")
        remaining = dict(clip.get_sd())
        for prefix in CLIP_PREFIXES:
            part = {k: remaining.pop(k) for k in [k for k in remaining if k.startswith(prefix)]}
            if not part:
                continue
            name = prefix[:-1]
            file_prefix = f"{filename_prefix}_{name}" if name else filename_prefix
            path, _, _ = _reserve(file_prefix)
            out = {}
            for key, tensor in part.items():
                key = key[len(prefix):]
                if key.startswith("transformer."):
                    key = key[len("transformer."):]
                if key == "text_model.text_projection.weight":  # ComfyUI keeps the projection outside text_model
                    key = "text_projection.weight"
                out[key] = tensor
            _complete_clip_text_model(out)
            save_file(out, path, metadata)
        return {}


def _complete_clip_text_model(sd: dict[str, Any]) -> None:
    """Add the two tensors ComfyUI's CLIP text models always hold, so a saved file has the same keys.

    SD1.x checkpoints carry no text projection (it is unused there; an
    identity is written) and no checkpoint carries ``logit_scale``
    (ComfyUI's initial 4.6055).
    """
    import torch

    embedding = sd.get("text_model.embeddings.token_embedding.weight")
    if embedding is None:
        return
    width = embedding.shape[1]
    sd.setdefault("text_projection.weight", torch.eye(width, dtype=embedding.dtype))
    sd.setdefault("logit_scale", torch.tensor(4.6055, dtype=torch.float32))


class VAESave:
    CATEGORY = "advanced/model_merging"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"vae": ("VAE",), "filename_prefix": ("STRING", {"default": "vae/ComfyUI_vae"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, vae: Any, filename_prefix: str, prompt: Any = None, extra_pnginfo: Any = None) -> dict:
        from ..model.saving import save_file

        path, _, _ = _reserve(filename_prefix)
        save_file(vae.get_sd(), path, _plain_metadata(prompt, extra_pnginfo))
        return {}


MODULE = "comfy_extras.nodes_model_merging"
NODES = [
    NodeDef("ModelMergeSimple", ModelMergeSimple, "ModelMergeSimple", MODULE),
    NodeDef("ModelMergeBlocks", ModelMergeBlocks, "ModelMergeBlocks", MODULE),
    NodeDef("ModelMergeSubtract", ModelMergeSubtract, "ModelMergeSubtract", MODULE),
    NodeDef("ModelMergeAdd", ModelMergeAdd, "ModelMergeAdd", MODULE),
    NodeDef("CheckpointSave", CheckpointSave, "Save Checkpoint", MODULE),
    NodeDef("CLIPMergeSimple", CLIPMergeSimple, "CLIPMergeSimple", MODULE),
    NodeDef("CLIPMergeSubtract", CLIPMergeSubtract, "CLIPMergeSubtract", MODULE),
    NodeDef("CLIPMergeAdd", CLIPMergeAdd, "CLIPMergeAdd", MODULE),
    NodeDef("CLIPSave", CLIPSave, "CLIPSave", MODULE),
    NodeDef("VAESave", VAESave, "VAESave", MODULE),
    NodeDef("ModelSave", ModelSave, "ModelSave", MODULE),
    NodeDef("ImageOnlyCheckpointSave", ImageOnlyCheckpointSave, "ImageOnlyCheckpointSave",
            "comfy_extras.nodes_video_model"),
]
