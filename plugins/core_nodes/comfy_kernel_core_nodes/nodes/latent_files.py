"""Latents on disk: SaveLatent and LoadLatent in ComfyUI's ``.latent`` format.

A ``.latent`` file is safetensors with ``latent_tensor`` (the raw latent) and
an empty ``latent_format_version_0`` marker; a file without the marker is an
older export holding latents multiplied by 0.18215, which loading undoes.
SaveLatent stores the prompt and workflow as safetensors metadata (JSON
strings) unless ``--disable-metadata``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from . import context
from .common import NodeDef
from .save import next_counter, reserve, split_prefix

VERSION_MARKER = "latent_format_version_0"
LEGACY_SCALE = 0.18215


def latent_metadata(prompt: Any, extra_pnginfo: Any) -> dict[str, str] | None:
    if context.option("disable_metadata", False):
        return None
    metadata = {"prompt": json.dumps(prompt) if prompt is not None else ""}
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            metadata[key] = json.dumps(value)
    return metadata


class SaveLatent:
    CATEGORY = "_for_testing"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",),
                             "filename_prefix": ("STRING", {"default": "latents/ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, samples: dict[str, Any], filename_prefix: str = "ComfyUI", prompt: Any = None,
             extra_pnginfo: Any = None) -> dict[str, Any]:
        import torch
        from safetensors.torch import save

        folder, filename, subfolder = split_prefix(filename_prefix, context.output_dir(), 0, 0)
        tensors = {"latent_tensor": samples["samples"].contiguous(), VERSION_MARKER: torch.tensor([])}
        data = save(tensors, metadata=latent_metadata(prompt, extra_pnginfo))
        handle, name, _ = reserve(folder, filename, next_counter(folder, filename), ext="latent")
        with handle:
            handle.write(data)
        return {"ui": {"latents": [{"filename": name, "subfolder": subfolder, "type": "output"}]}}


def _latent_path(name: str) -> str | None:
    try:
        path = context.annotated_input_path(name)
    except (ValueError, RuntimeError):
        return None
    return path if os.path.isfile(path) else None


def _latent_files() -> list[str]:
    return sorted(f for f in context.input_files() if f.endswith(".latent"))


def load_latent_file(path: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    tensors = load_file(path, device="cpu")
    scale = 1.0 if VERSION_MARKER in tensors else 1.0 / LEGACY_SCALE
    return {"samples": tensors["latent_tensor"].float() * scale}


class LoadLatent:
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"latent": (_latent_files(),)}}

    def load(self, latent: str) -> tuple[dict[str, Any]]:
        path = _latent_path(latent)
        if path is None:
            raise FileNotFoundError(f"Invalid latent file: {latent}")
        return (load_latent_file(path),)

    @classmethod
    def IS_CHANGED(cls, latent: str) -> str:
        path = _latent_path(latent)
        if path is None:
            return ""
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    @classmethod
    def VALIDATE_INPUTS(cls, latent: str) -> bool | str:
        return True if _latent_path(latent) else f"Invalid latent file: {latent}"


NODES = [
    NodeDef("SaveLatent", SaveLatent, "SaveLatent", "nodes"),
    NodeDef("LoadLatent", LoadLatent, "LoadLatent", "nodes"),
]
