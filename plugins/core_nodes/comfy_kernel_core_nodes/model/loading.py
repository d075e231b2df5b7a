"""Loading MODEL, CLIP and VAE from weights files (what the loader nodes and ``comfy.sd`` call).

Each function reads only the file header to decide what the file holds (see
:mod:`.detection`) and returns light objects whose weights the model manager
loads on first use. Errors say what was found and why it cannot be used.
"""

from __future__ import annotations

import os
from typing import Any

from . import detection
from .clip import CLIP
from .files import tensor_shapes
from .patcher import ModelPatcher
from .vae import VAE

CHECKPOINT_PREFIX = "model.diffusion_model."


class UnsupportedModel(ValueError):
    """The file holds weights, but of no model family this server can run."""


def _name(path: str) -> str:
    return os.path.basename(path)


def _describe(shapes: detection.Shapes, prefix: str) -> str:
    found = detection.unet_config_from(shapes, prefix)
    if found is None:
        return "no known diffusion model layout"
    arch, config = found
    facts = ", ".join(f"{k}={config.get(k)}" for k in ("context_dim", "adm_in_channels", "in_channels",
                                                        "model_channels") if k in config)
    return f"a {arch} layout ({facts}) that matches no supported model"


def model_config(path: str, prefix: str | None = None) -> tuple[detection.ModelConfig, str]:
    shapes = tensor_shapes(path)
    prefix = detection.diffusion_prefix(shapes) if prefix is None else prefix
    if prefix is None:
        raise UnsupportedModel(f"{_name(path)}: no diffusion model weights recognised in this file")
    config = detection.model_config_from(shapes, prefix)
    if config is None:
        raise UnsupportedModel(f"{_name(path)}: {_describe(shapes, prefix)}")
    return config, prefix


def load_diffusion_model(path: str, model_options: dict[str, Any] | None = None) -> ModelPatcher:
    """UNETLoader: a bare diffusion model file (or a checkpoint's diffusion model).

    ``model_options["dtype"]`` stores the weights in that dtype (fp8: computed in the
    device's compute dtype, layer by layer).
    """
    config, prefix = model_config(path)
    return ModelPatcher(config.load(path, tensor_shapes(path), prefix, (model_options or {}).get("dtype")))


def load_checkpoint(path: str, output_vae: bool = True, output_clip: bool = True,
                    embedding_directory: Any = None) -> tuple[ModelPatcher, CLIP | None, VAE | None]:
    """CheckpointLoaderSimple: (MODEL, CLIP or None, VAE or None) of a single-file checkpoint."""
    shapes = tensor_shapes(path)
    if not any(k.startswith(CHECKPOINT_PREFIX) for k in shapes):
        raise UnsupportedModel(f"{_name(path)}: not a checkpoint (no '{CHECKPOINT_PREFIX}' weights); "
                               "load a bare diffusion model with 'Load Diffusion Model'")
    config, prefix = model_config(path, CHECKPOINT_PREFIX)
    patcher = ModelPatcher(config.load(path, shapes, prefix))
    clip = config.load_clip(path, shapes, embedding_directory) if output_clip else None
    vae = None
    if output_vae:
        for vae_prefix in config.vae_key_prefix:
            kind = detection.vae_kind(shapes, vae_prefix)
            if kind is not None:
                vae = kind.build(path, vae_prefix, shapes)
                break
    return patcher, clip, vae


def load_clip(paths: list[str], clip_type: str = "stable_diffusion", embedding_directory: Any = None) -> CLIP:
    """CLIPLoader and friends: text encoder files combined as ``clip_type`` expects."""
    detection.load_families()
    loader = CLIP_TYPES.get(clip_type)
    if loader is None:
        raise UnsupportedModel(f"CLIP type '{clip_type}' is not supported yet")
    return loader(paths, embedding_directory)


def load_vae(path: str) -> VAE:
    """VAELoader: a bare VAE file or a checkpoint's VAE."""
    shapes = tensor_shapes(path)
    for prefix in ("", "first_stage_model.", "vae."):
        kind = detection.vae_kind(shapes, prefix)
        if kind is not None:
            return kind.build(path, prefix, shapes)
    raise UnsupportedModel(f"{_name(path)}: no supported VAE recognised in this file")


#: clip_type -> loader(paths, embedding_directory); the families register theirs.
CLIP_TYPES: dict[str, Any] = {}
