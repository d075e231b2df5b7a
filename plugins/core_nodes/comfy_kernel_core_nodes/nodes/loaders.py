"""Model loader nodes: checkpoints, standalone VAE / text encoder / diffusion model files.

Loaders only inspect the file (its tensor names and shapes, read from the
header for .safetensors) and return references; the weights are read by the
model manager the first time a node runs the model (see models.py). So a graph
whose text encodings are cached never loads the text encoder at all.
"""

from __future__ import annotations

from typing import Any

from . import context
from .common import NodeDef
from .models import (
    CLIP_PREFIXES,
    UNET_PREFIX,
    VAE_PREFIX,
    CLIPRef,
    UNetRef,
    VAERef,
    find_prefix,
    tensor_shapes,
)


def _unet_model_type(shapes: dict[str, tuple[int, ...]], prefix: str, name: str) -> str:
    """Model family from the UNet's key layout; only SD1.x runs here."""
    import torch

    from ..sd.checkpoint import UnsupportedCheckpoint, derive_unet_config, detect_model_type

    meta = {k[len(prefix):]: torch.empty(s, device="meta") for k, s in shapes.items() if k.startswith(prefix)}
    if "input_blocks.0.0.weight" not in meta:
        raise UnsupportedCheckpoint(f"{name}: no SD UNet weights found (expected keys under '{prefix}')")
    model_type = detect_model_type(derive_unet_config(meta))
    if model_type != "sd15":
        raise UnsupportedCheckpoint(f"{name}: model type '{model_type}' is not supported yet (only SD1.x)")
    return model_type


class CheckpointLoaderSimple:
    DESCRIPTION = "Loads a single-file checkpoint: the diffusion model, its text encoder and its VAE."
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = ("The diffusion model that denoises latents.",
                       "The text encoder that turns prompts into conditioning.",
                       "The autoencoder that maps images to latents and back.")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"ckpt_name": (context.list_files("checkpoints"),
                                           {"tooltip": "The checkpoint file to load."})}}

    def load_checkpoint(self, ckpt_name: str) -> tuple[Any, Any, Any]:
        path = context.full_path("checkpoints", ckpt_name)
        shapes = tensor_shapes(path)
        model_type = _unet_model_type(shapes, UNET_PREFIX, ckpt_name)
        unet = UNetRef(path, UNET_PREFIX, model_type=model_type)
        clip_prefix = find_prefix(shapes, CLIP_PREFIXES, "embeddings.token_embedding.weight")
        clip = CLIPRef(path, clip_prefix) if clip_prefix is not None else None
        vae = VAERef(path, VAE_PREFIX) if VAE_PREFIX + "decoder.conv_in.weight" in shapes else None
        return (unet, clip, vae)


class VAELoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load_vae"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"vae_name": (context.list_files("vae") + ["pixel_space"],)}}

    def load_vae(self, vae_name: str) -> tuple[Any]:
        if vae_name == "pixel_space":
            raise ValueError("VAELoader: the pixel_space VAE is not supported yet")
        path = context.full_path("vae", vae_name)
        shapes = tensor_shapes(path)
        prefix = find_prefix(shapes, ("", VAE_PREFIX), "decoder.conv_in.weight")
        if prefix is None:
            raise ValueError(f"{vae_name}: not an SD KL autoencoder (no decoder.conv_in.weight)")
        return (VAERef(path, prefix),)


#: CLIPLoader's ``type`` choices, in ComfyUI's order.
CLIP_TYPES = ("stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image")


class CLIPLoader:
    """A standalone SD1 text encoder (CLIP-L), in Hugging Face or checkpoint key layout."""

    DESCRIPTION = "Loads a standalone text encoder file; only the SD1.x CLIP-L encoder is supported."
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip_name": (context.list_files("text_encoders"),),
                             "type": (list(CLIP_TYPES),)},
                "optional": {"device": (["default", "cpu"], {"advanced": True})}}

    def load_clip(self, clip_name: str, type: str = "stable_diffusion", device: str = "default") -> tuple[Any]:
        if type != "stable_diffusion":
            raise ValueError(f"CLIPLoader: type '{type}' is not supported (only stable_diffusion)")
        path = context.full_path("text_encoders", clip_name)
        shapes = tensor_shapes(path)
        prefixes = ("text_model.", "", *CLIP_PREFIXES, "transformer.text_model.", "clip_l.transformer.text_model.")
        prefix = find_prefix(shapes, prefixes, "embeddings.token_embedding.weight")
        if prefix is None:
            raise ValueError(f"{clip_name}: no CLIP text encoder weights found")
        return (CLIPRef(path, prefix),)


class UNETLoader:
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_unet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"unet_name": (context.list_files("diffusion_models"),),
                             "weight_dtype": (["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],)}}

    def load_unet(self, unet_name: str, weight_dtype: str = "default") -> tuple[Any]:
        """A bare UNet file (keys without prefix) or a checkpoint's UNet. fp8 storage is not implemented:
        every choice loads in the device's default dtype."""
        path = context.full_path("diffusion_models", unet_name)
        shapes = tensor_shapes(path)
        prefix = find_prefix(shapes, ("", UNET_PREFIX), "input_blocks.0.0.weight")
        if prefix is None:
            raise ValueError(f"{unet_name}: no SD UNet weights found")
        return (UNetRef(path, prefix, model_type=_unet_model_type(shapes, prefix, unet_name)),)


NODES = [
    NodeDef("CheckpointLoaderSimple", CheckpointLoaderSimple, "Load Checkpoint", "nodes"),
    NodeDef("VAELoader", VAELoader, "Load VAE", "nodes"),
    NodeDef("CLIPLoader", CLIPLoader, "Load CLIP", "nodes"),
    NodeDef("UNETLoader", UNETLoader, "Load Diffusion Model", "nodes"),
]
