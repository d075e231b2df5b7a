"""Model loader nodes: checkpoints, standalone VAE / text encoder / diffusion model files.

Loaders only inspect the file (its tensor names and shapes, read from the
header for .safetensors) and return light MODEL / CLIP / VAE objects; the model
manager reads the weights the first time a node runs the model. So a graph
whose text encodings are cached never loads the text encoder at all.
"""

from __future__ import annotations

from typing import Any

from .. import warmup
from . import context
from .common import NodeDef


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
        from ..model.loading import load_checkpoint

        path = context.full_path("checkpoints", ckpt_name)
        warmup.remember("checkpoint", path)
        return load_checkpoint(path, embedding_directory=context.embedding_directory)


class CheckpointLoader:
    """ComfyUI's deprecated loader that takes the checkpoint's YAML model config as well."""

    DESCRIPTION = ("Loads a checkpoint with an LDM model config (YAML): the config's v parameterization and "
                   "text encoder layer apply; the architecture is detected from the weights.")
    CATEGORY = "advanced/loaders"
    DEPRECATED = True
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"config_name": (context.list_files("configs"),),
                             "ckpt_name": (context.list_files("checkpoints"),)}}

    def load_checkpoint(self, config_name: str, ckpt_name: str) -> tuple[Any, Any, Any]:
        from ..model.loading import load_checkpoint_with_config

        return load_checkpoint_with_config(context.full_path("configs", config_name),
                                           context.full_path("checkpoints", ckpt_name),
                                           embedding_directory=context.embedding_directory)


class DiffusersLoader:
    """A diffusers pipeline folder (unet/ or transformer/, text_encoder/, text_encoder_2/, vae/)."""

    DESCRIPTION = "Loads a pipeline folder saved by diffusers: its diffusion model, text encoders and VAE."
    CATEGORY = "advanced/loaders/deprecated"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model_path": (context.list_diffusers(),)}}

    def load_checkpoint(self, model_path: str, output_vae: bool = True, output_clip: bool = True
                        ) -> tuple[Any, Any, Any]:
        from ..model.loading import load_diffusers

        return load_diffusers(context.diffusers_path(model_path), output_vae, output_clip,
                              embedding_directory=context.embedding_directory)


class VAELoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load_vae"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"vae_name": (context.list_files("vae") + ["pixel_space"],)}}

    def load_vae(self, vae_name: str) -> tuple[Any]:
        from ..model.loading import load_vae
        from ..model.vae import pixel_space_vae

        if vae_name == "pixel_space":
            return (pixel_space_vae(),)
        path = context.full_path("vae", vae_name)
        warmup.remember("vae", path)
        return (load_vae(path),)


#: CLIPLoader's ``type`` choices, in ComfyUI's order.
CLIP_TYPES = ("stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2")


class CLIPLoader:
    """A standalone text encoder, combined as its ``type`` (model family) expects."""

    DESCRIPTION = "Loads a standalone text encoder file as the text encoder of a model family."
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip_name": (context.list_files("text_encoders"),),
                             "type": (list(CLIP_TYPES),)},
                "optional": {"device": (["default", "cpu"], {"advanced": True})}}

    def load_clip(self, clip_name: str, type: str = "stable_diffusion", device: str = "default") -> tuple[Any]:
        from ..model.loading import load_clip

        path = context.full_path("text_encoders", clip_name)
        warmup.remember("clip", path, type)
        return (load_clip([path], type, embedding_directory=context.embedding_directory),)


#: DualCLIPLoader's ``type`` choices, in ComfyUI's order.
DUAL_CLIP_TYPES = ("sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image", "hunyuan_video_15", "ace")


class DualCLIPLoader:
    """Two text encoder files combined as one model family's CLIP."""

    DESCRIPTION = ("Which files each type takes:\n\nsdxl: clip-l, clip-g\nsd3: clip-l, clip-g / clip-l, t5 / "
                   "clip-g, t5\nflux: clip-l, t5\nhidream: t5 and/or llama\nhunyuan_image: qwen2.5vl 7b, byt5 small\n"
                   "hunyuan_video_15: qwen2.5vl 7b, byt5 small")
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        files = context.list_files("text_encoders")
        return {"required": {"clip_name1": (files,), "clip_name2": (files,), "type": (list(DUAL_CLIP_TYPES),)},
                "optional": {"device": (["default", "cpu"], {"advanced": True})}}

    def load_clip(self, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> tuple[Any]:
        from ..model.loading import load_clip

        paths = [context.full_path("text_encoders", name) for name in (clip_name1, clip_name2)]
        warmup.remember("clip", *paths, type)
        return (load_clip(paths, type, embedding_directory=context.embedding_directory),)


class UNETLoader:
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_unet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"unet_name": (context.list_files("diffusion_models"),),
                             "weight_dtype": (["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],)}}

    def load_unet(self, unet_name: str, weight_dtype: str = "default") -> tuple[Any]:
        """``fp8_*`` store the weights in that fp8 format (half the memory of fp16) and compute in the
        device's usual dtype, casting each layer's weights as it runs."""
        import torch

        from ..model.loading import load_diffusion_model

        options = {}
        if weight_dtype in ("fp8_e4m3fn", "fp8_e4m3fn_fast"):
            options["dtype"] = torch.float8_e4m3fn
        elif weight_dtype == "fp8_e5m2":
            options["dtype"] = torch.float8_e5m2
        path = context.full_path("diffusion_models", unet_name)
        if not options:
            warmup.remember("diffusion_model", path)
        return (load_diffusion_model(path, options),)


NODES = [
    NodeDef("CheckpointLoaderSimple", CheckpointLoaderSimple, "Load Checkpoint", "nodes"),
    NodeDef("CheckpointLoader", CheckpointLoader, "Load Checkpoint With Config (DEPRECATED)", "nodes"),
    NodeDef("DiffusersLoader", DiffusersLoader, "DiffusersLoader", "nodes"),
    NodeDef("VAELoader", VAELoader, "Load VAE", "nodes"),
    NodeDef("CLIPLoader", CLIPLoader, "Load CLIP", "nodes"),
    NodeDef("UNETLoader", UNETLoader, "Load Diffusion Model", "nodes"),
    NodeDef("DualCLIPLoader", DualCLIPLoader, "DualCLIPLoader", "nodes"),
]
