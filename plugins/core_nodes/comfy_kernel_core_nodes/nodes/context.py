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


def shared_store() -> Any:
    """The folder registry when a remote store backs input/output/temp (a cluster without shared
    directories), else None: savers then claim each new name there too."""
    return _folders if _folders is not None and getattr(_folders, "remote", None) is not None else None


def list_files(folder: str) -> list[str]:
    """Files of a model folder (empty before start-up, so INPUT_TYPES never fails)."""
    return _folders.list(folder) if _folders is not None else []


def full_path(folder: str, name: str) -> str:
    """Absolute path of ``name`` in a model folder; FileNotFoundError names what was missing."""
    return folders().full_path_or_raise(folder, name)


def list_diffusers() -> list[str]:
    """Folders under the ``diffusers`` model folders that hold a pipeline (a ``model_index.json``),
    relative to their base, as DiffusersLoader lists them (links followed)."""
    if _folders is None:
        return []
    _folders.list("diffusers")  # the registry's walk records the directories /object_info's cache watches
    found: set[str] = set()
    for base in _folders.paths("diffusers"):
        if not os.path.isdir(base):
            continue
        for root, _dirs, files in os.walk(base, followlinks=True):
            if "model_index.json" in files:
                found.add(os.path.relpath(root, start=base))
    return sorted(found)


def diffusers_path(name: str) -> str:
    """Absolute path of the pipeline folder ``name`` of :func:`list_diffusers`; ``..`` cannot climb out."""
    rel = os.path.relpath(os.path.join(os.sep, name), os.sep)
    for base in folders().paths("diffusers"):
        candidate = os.path.join(base, rel)
        if os.path.isfile(os.path.join(candidate, "model_index.json")):
            return candidate
    raise FileNotFoundError(f"Diffusers model folder '{name}' not found.")


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
    """``name``, ``sub/name`` or ``name [output]`` resolved and confined to its base directory.

    Output and temp files must belong to the running prompt's owner when an
    auth plugin is on (the kernel refuses others' with ``FileAccessDenied``).
    """
    return folders().annotated_path(name)


def option(name: str, default: Any = None) -> Any:
    """A server flag by its argparse ``dest`` (``disable_metadata``, ``preview_method`` ...)."""
    return getattr(_config, name, default) if _config is not None else default


def input_images() -> list[str]:
    """Image files directly in ``<input>``, sorted, as LoadImage's combo lists them."""
    from comfy_kernel.files.folders import content_category

    return sorted(f for f in _input_files() if content_category(f) == "image")


def _input_files() -> list[str]:
    """Files directly in ``<input>``, with those of the cluster's shared store when there is one."""
    if _folders is None:
        return []
    return _folders.input_names()


def input_files() -> list[str]:
    """Every regular file directly in ``<input>``, sorted (LoadImageMask's combo)."""
    return sorted(_input_files())
