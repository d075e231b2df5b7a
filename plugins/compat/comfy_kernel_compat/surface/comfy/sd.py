"""ComfyUI's ``comfy.sd``: core_nodes' loaders, ``CLIP`` and ``VAE``, with ComfyUI's signatures.

``load_checkpoint_guess_config`` and friends take any file path (as in
ComfyUI), detect the family with core_nodes' detection and return the same
objects the loader nodes return.
"""

import enum
from typing import Any

from comfy_kernel_compat.reexport import reexport


class CLIPType(enum.Enum):
    """ComfyUI's text-encoder kinds; ``load_clip`` maps them to core_nodes' ``clip_type`` names."""

    STABLE_DIFFUSION = 1
    STABLE_CASCADE = 2
    SD3 = 3
    STABLE_AUDIO = 4
    HUNYUAN_DIT = 5
    FLUX = 6
    MOCHI = 7
    LTXV = 8
    HUNYUAN_VIDEO = 9
    PIXART = 10
    COSMOS = 11
    LUMINA2 = 12
    WAN = 13
    HIDREAM = 14
    CHROMA = 15
    ACE = 16
    OMNIGEN2 = 17
    QWEN_IMAGE = 18
    HUNYUAN_IMAGE = 19


class TEModel(enum.Enum):
    CLIP_L = 1
    CLIP_H = 2
    CLIP_G = 3
    T5_XXL = 4
    T5_XL = 5
    T5_BASE = 6


def load_checkpoint_guess_config(ckpt_path: str, output_vae: bool = True, output_clip: bool = True,
                                 output_clipvision: bool = False, embedding_directory: Any = None,
                                 output_model: bool = True, model_options: dict | None = None,
                                 te_model_options: dict | None = None) -> tuple[Any, Any, Any, Any]:
    """``(model, clip, vae, clipvision)`` of a single-file checkpoint; clipvision is always None."""
    from comfy_kernel_core_nodes.model.loading import load_checkpoint as load

    model, clip, vae = load(ckpt_path, output_vae, output_clip, embedding_directory)
    return (model if output_model else None, clip, vae, None)


def load_checkpoint(config_path: Any = None, ckpt_path: str | None = None, output_vae: bool = True,
                    output_clip: bool = True, embedding_directory: Any = None, state_dict: Any = None,
                    config: Any = None) -> tuple[Any, Any, Any]:
    """The legacy loader: a checkpoint and its YAML model config (a path, or ``config`` already parsed)."""
    from comfy_kernel_core_nodes.model.loading import load_checkpoint_with_config

    if ckpt_path is None:
        raise ValueError("comfy.sd.load_checkpoint needs ckpt_path on comfy-kernel (state dicts are not accepted)")
    return load_checkpoint_with_config(config_path, ckpt_path, output_vae, output_clip, embedding_directory,
                                       config=config)


def load_diffusion_model(unet_path: str, model_options: dict | None = None) -> Any:
    from comfy_kernel_core_nodes.model.loading import load_diffusion_model as load

    return load(unet_path, model_options)


def load_unet(unet_path: str, dtype: Any = None) -> Any:
    return load_diffusion_model(unet_path, {"dtype": dtype} if dtype is not None else None)


def load_clip(ckpt_paths: list[str], embedding_directory: Any = None,
              clip_type: Any = CLIPType.STABLE_DIFFUSION, model_options: dict | None = None) -> Any:
    """A CLIP from text-encoder files; ``clip_type`` is a :class:`CLIPType` or core_nodes' name."""
    from comfy_kernel_core_nodes.model.loading import load_clip as load

    name = clip_type.name.lower() if isinstance(clip_type, CLIPType) else str(clip_type)
    return load(list(ckpt_paths), name, embedding_directory)


def load_lora_for_models(model: Any, clip: Any, lora: dict[str, Any], strength_model: float,
                         strength_clip: float) -> tuple[Any, Any]:
    from comfy_kernel_core_nodes.model.lora import load_lora_for_models as load

    return load(model, clip, lora, strength_model, strength_clip)


reexport(globals(), ["model.clip", "model.vae", "model.loading"])
