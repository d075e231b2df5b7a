"""ComfyUI's ``comfy.diffusers_load``: a diffusers pipeline folder as (MODEL, CLIP, VAE), as DiffusersLoader loads it."""

from typing import Any


def first_file(path: str, filenames: list[str]) -> str | None:
    """The first of ``filenames`` that exists in the folder ``path``."""
    import os

    for name in filenames:
        candidate = os.path.join(path, name)
        if os.path.exists(candidate):
            return candidate
    return None


def load_diffusers(model_path: str, output_vae: bool = True, output_clip: bool = True,
                   embedding_directory: Any = None) -> tuple[Any, Any, Any]:
    from comfy_kernel_core_nodes.model.loading import load_diffusers as load

    return load(model_path, output_vae, output_clip, embedding_directory)
