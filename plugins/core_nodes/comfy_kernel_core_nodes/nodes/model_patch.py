"""Model-patch nodes (ComfyUI's ``comfy_extras.nodes_model_patch``): load a ``model_patches`` file and apply it.

ModelPatchLoader reads a MODEL_PATCH (see ``model/model_patch.py``);
QwenImageDiffsynthControlnet adds DiffSynth's blockwise ControlNet to a
Qwen-Image model (or Z-Image's fun ControlNet to a Z-Image model); USOStyleReference puts USO's SigLIP style tokens in front of
a Flux model's text tokens.
"""

from __future__ import annotations

from typing import Any

from . import context
from .common import NodeDef

MODULE = "comfy_extras.nodes_model_patch"


class ModelPatchLoader:
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL_PATCH",)
    FUNCTION = "load_model_patch"
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"name": (context.list_files("model_patches"),)}}

    def load_model_patch(self, name: str) -> tuple[Any]:
        from ..model.model_patch import load_model_patch

        return (load_model_patch(context.full_path("model_patches", name)),)


def _require(model_patch: Any, kinds: tuple[str, ...], node: str) -> str:
    found = getattr(model_patch.model, "patch_kind", None)
    if found not in kinds:
        raise ValueError(f"{node}: the model patch is a {found or 'different kind'}, not a {' or '.join(kinds)}")
    return found


class QwenImageDiffsynthControlnet:
    """The image (RGB, VAE-encoded at the sampled size) steers every block the patch has a control block for;
    with an inpaint patch, ``mask`` marks what to repaint. Z-Image fun ControlNet files work here too (as in
    current ComfyUI)."""

    CATEGORY = "advanced/loaders/qwen"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "diffsynth_controlnet"
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "model_patch": ("MODEL_PATCH",), "vae": ("VAE",),
                             "image": ("IMAGE",),
                             "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01})},
                "optional": {"mask": ("MASK",)}}

    def diffsynth_controlnet(self, model: Any, model_patch: Any, vae: Any, image: Any, strength: float,
                             mask: Any = None) -> tuple[Any]:
        from ..model.model_patch import QWEN_BLOCKWISE, Z_IMAGE_FUN
        from ..patches.model_patch import DiffSynthControlPatch, ZImageFunControlPatch

        kind = _require(model_patch, (QWEN_BLOCKWISE, Z_IMAGE_FUN), "QwenImageDiffsynthControlnet")
        if mask is not None:
            if mask.ndim == 2:
                mask = mask.unsqueeze(0)
            mask = 1.0 - mask.unsqueeze(1)
        patched = model.clone()
        if kind == Z_IMAGE_FUN:
            patch = ZImageFunControlPatch(model_patch, vae, image[..., :3], strength, mask=mask)
            patched.set_model_noise_refiner_patch(patch)
            patched.set_model_double_block_patch(patch)
        else:
            patched.set_model_double_block_patch(DiffSynthControlPatch(model_patch, vae, image[..., :3], strength,
                                                                       mask))
        return (patched,)


class USOStyleReference:
    """Style tokens from a SigLIP encoding (the 20th- and 11th-last layers' outputs and the penultimate one)."""

    CATEGORY = "advanced/model_patches/flux"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply_patch"
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "model_patch": ("MODEL_PATCH",),
                             "clip_vision_output": ("CLIP_VISION_OUTPUT",)}}

    def apply_patch(self, model: Any, model_patch: Any, clip_vision_output: Any) -> tuple[Any]:
        import torch

        from ..model.model_patch import USO_PROJECTOR
        from ..patches.model_patch import UsoStyleTokensPatch

        _require(model_patch, (USO_PROJECTOR,), "USOStyleReference")
        hidden = getattr(clip_vision_output, "all_hidden_states", None)
        if hidden is None or hidden.shape[1] < 20:
            raise ValueError("USOStyleReference needs every layer's output of a SigLIP image encoder "
                             "(CLIPVisionEncode with a SigLIP model)")
        features = torch.stack((hidden[:, -20], hidden[:, -11], clip_vision_output.penultimate_hidden_states))
        patched = model.clone()
        patched.set_model_post_input_patch(UsoStyleTokensPatch(model_patch, features))
        return (patched,)


NODES = [
    NodeDef("ModelPatchLoader", ModelPatchLoader, "ModelPatchLoader", MODULE),
    NodeDef("QwenImageDiffsynthControlnet", QwenImageDiffsynthControlnet, "QwenImageDiffsynthControlnet", MODULE),
    NodeDef("USOStyleReference", USOStyleReference, "USOStyleReference", MODULE),
]
