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


def load_checkpoint_with_config(config_path: str | None, ckpt_path: str, output_vae: bool = True,
                                output_clip: bool = True, embedding_directory: Any = None,
                                config: dict[str, Any] | None = None) -> tuple[ModelPatcher, CLIP | None, VAE | None]:
    """CheckpointLoader (deprecated in ComfyUI): a checkpoint with an LDM-style YAML model config.

    The architecture is detected from the weights as for CheckpointLoaderSimple; of the
    YAML only what changes results is used, as ComfyUI does: ``model.params.parameterization:
    v`` makes the model predict v (the discrete schedule of its family), and
    ``cond_stage_config.params.layer_idx`` picks the text encoder's output layer. ``config``:
    the parsed YAML instead of its path.
    """
    if config is None:
        import yaml

        with open(config_path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
    params = (config.get("model") or {}).get("params") or {}
    patcher, clip, vae = load_checkpoint(ckpt_path, output_vae, output_clip, embedding_directory)
    if params.get("parameterization") == "v":
        from . import model_sampling as ms

        patcher = patcher.clone()
        patcher.add_object_patch("model_sampling", ms.combine(ms.ModelSamplingDiscrete, ms.PREDICTIONS["v_prediction"],
                                                              patcher.model.model_config))
    layer_idx = ((params.get("cond_stage_config") or {}).get("params") or {}).get("layer_idx")
    if layer_idx is not None and clip is not None:
        clip.clip_layer(int(layer_idx))
    return patcher, clip, vae


#: where a diffusers pipeline folder keeps its parts
DIFFUSION_FOLDERS = ("unet", "transformer")
#: ComfyUI reads the first two; SD3 folders keep T5 in the third
TEXT_ENCODER_FOLDERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def load_diffusers(folder: str, output_vae: bool = True, output_clip: bool = True,
                   embedding_directory: Any = None) -> tuple[ModelPatcher, CLIP | None, VAE | None]:
    """DiffusersLoader: (MODEL, CLIP, VAE) of a diffusers pipeline folder.

    The diffusion model comes from ``unet/`` (or ``transformer/``), the text encoders
    from ``text_encoder/``, ``text_encoder_2/`` and ``text_encoder_3/`` (combined as the
    model family's CLIP type), the VAE from ``vae/``; each folder holds one weights file or shards (see
    :mod:`.folders`). They load as the same objects as the single-file checkpoint
    of those weights; the folder's configs and scheduler are not read, as in ComfyUI.
    """
    from .folders import is_weights_folder

    part = lambda name: os.path.join(folder, name)  # noqa: E731
    model_dir = next((part(n) for n in DIFFUSION_FOLDERS if is_weights_folder(part(n))), None)
    if model_dir is None:
        raise UnsupportedModel(f"{_name(folder)}: no diffusion model weights in unet/ or transformer/")
    config, prefix = model_config(model_dir)
    shapes = tensor_shapes(model_dir)
    patcher = ModelPatcher(config.load(model_dir, shapes, prefix))
    clip = None
    if output_clip:
        encoders = [part(n) for n in TEXT_ENCODER_FOLDERS if is_weights_folder(part(n))]
        if not encoders:
            raise UnsupportedModel(f"{_name(folder)}: no text encoder weights in text_encoder/")
        clip = load_clip(encoders, config.clip_type, embedding_directory)
    vae = None
    if output_vae:
        if not is_weights_folder(part("vae")):
            raise UnsupportedModel(f"{_name(folder)}: no VAE weights in vae/")
        vae = load_vae(part("vae"))
    return patcher, clip, vae


def load_clip(paths: list[str], clip_type: str = "stable_diffusion", embedding_directory: Any = None) -> CLIP:
    """CLIPLoader and friends: text encoder files combined as ``clip_type`` expects.

    A single file the type cannot use, of a kind with a default CLIP (see
    :class:`.detection.TextEncoderKind`), loads as that, as in ComfyUI.
    """
    detection.load_families()
    loader = CLIP_TYPES.get(clip_type)
    try:
        if loader is None:
            raise UnsupportedModel(f"CLIP type '{clip_type}' is not supported yet")
        return loader(paths, embedding_directory)
    except UnsupportedModel:
        fallback = _default_clip(paths)
        if fallback is None:
            raise
        return fallback


def _default_clip(paths: list[str]) -> CLIP | None:
    if len(paths) != 1:
        return None
    shapes = tensor_shapes(paths[0])
    found = detection.text_encoder_kind(shapes)
    if found is None or found[0].default_clip is None:
        return None
    kind, prefix = found
    return kind.default_clip(paths[0], prefix, shapes)


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
