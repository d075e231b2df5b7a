"""Where the nodes find the server's folders and flags.

ComfyUI's nodes reach ``folder_paths`` and ``args`` as process globals. Here
the plugin's hooks hand the kernel's folder registry and configuration to this
module once at start-up, and the nodes read them at call time. Tests that call
node classes directly configure it with :func:`configure`.
"""

from __future__ import annotations

import os
from typing import Any

_folders: Any = None
_config: Any = None


def configure(folders: Any = None, config: Any = None) -> None:
    """Adopt the kernel's :class:`FolderRegistry` and/or its parsed configuration."""
    global _folders, _config
    if folders is not None:
        _folders = folders
    if config is not None:
        _config = config


def folders() -> Any:
    if _folders is None:
        raise RuntimeError("core_nodes: the model folder registry is not configured yet")
    return _folders


def list_files(folder: str) -> list[str]:
    """Files of a model folder (empty before start-up, so INPUT_TYPES never fails)."""
    return _folders.list(folder) if _folders is not None else []


def full_path(folder: str, name: str) -> str:
    """Absolute path of ``name`` in a model folder; FileNotFoundError names what was missing."""
    return folders().full_path_or_raise(folder, name)


def input_dir() -> str:
    return folders().dirs.input


def output_dir() -> str:
    return folders().dirs.output


def temp_dir() -> str:
    return folders().dirs.temp


def embedding_directory() -> str | None:
    """The first existing ``embeddings`` folder (textual-inversion files named by ``embedding:name``)."""
    if _folders is None:
        return None
    for path in _folders.paths("embeddings"):
        if os.path.isdir(path):
            return path
    return None


def annotated_input_path(name: str) -> str:
    """``name``, ``sub/name`` or ``name [output]`` resolved and confined to its base directory."""
    return folders().annotated_path(name)


def option(name: str, default: Any = None) -> Any:
    """A server flag by its argparse ``dest`` (``disable_metadata``, ``preview_method`` ...)."""
    return getattr(_config, name, default) if _config is not None else default


def input_images() -> list[str]:
    """Image files directly in ``<input>``, sorted, as LoadImage's combo lists them."""
    from comfy_kernel.files.folders import content_category

    return sorted(f for f in _input_files() if content_category(f) == "image")


def _input_files() -> list[str]:
    if _folders is None:
        return []
    base = input_dir()
    try:
        return [f for f in os.listdir(base) if os.path.isfile(os.path.join(base, f))]
    except OSError:
        return []


def input_files() -> list[str]:
    """Every regular file directly in ``<input>``, sorted (LoadImageMask's combo)."""
    return sorted(_input_files())
