"""ComfyUI's ``folder_paths`` on the kernel's folder registry.

Every function reads the live :class:`~comfy_kernel.files.folders.FolderRegistry`,
so a folder a pack adds here is seen by the kernel's loaders, ``/models`` and
``/object_info``, and folders the kernel or other plugins add are seen here.
Module attributes that ComfyUI keeps as globals (``models_dir``,
``output_directory``, ``folder_names_and_paths`` ...) are computed on access
(PEP 562 ``__getattr__``) for the same reason.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, Literal

from comfy_kernel.files.folders import LEGACY_NAMES, PT_EXTENSIONS, Folder, content_category
from comfy_kernel.files.paths import split_annotation
from comfy_kernel_compat import state

log = logging.getLogger("folder_paths")

supported_pt_extensions: set[str] = set(PT_EXTENSIONS)
"""The extensions of model files (``.safetensors``, ``.ckpt`` ...); packs pass it when adding folders."""

#: Kept for packs that read it; listings are cached by the registry itself.
filename_list_cache: dict[str, tuple[list[str], dict[str, float], float]] = {}

extension_mimetypes_cache: dict[str, str] = {"webp": "image", "fbx": "model"}


def map_legacy(folder_name: str) -> str:
    """``unet`` → ``diffusion_models``, ``clip`` → ``text_encoders``."""
    return LEGACY_NAMES.get(folder_name, folder_name)


class _FolderTable(MutableMapping):
    """``folder_names_and_paths``: name → ``(paths, extensions)``, live on the registry.

    The list and set in each tuple are the registry's own objects, so packs
    that append a directory to ``folder_names_and_paths[name][0]`` change
    what the kernel lists, as they do in ComfyUI.
    """

    def __getitem__(self, name: str) -> tuple[list[str], set[str]]:
        folder = state.folders().folders[map_legacy(name)]
        return folder.paths, folder.extensions

    def __setitem__(self, name: str, value: Any) -> None:
        paths, extensions = value
        state.folders().replace(name, paths, extensions)

    def __delitem__(self, name: str) -> None:
        if not state.folders().remove(name):
            raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(state.folders().folders))

    def __len__(self) -> int:
        return len(state.folders().folders)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and map_legacy(name) in state.folders().folders

    def __repr__(self) -> str:
        return repr(dict(self.items()))


folder_names_and_paths = _FolderTable()


def __getattr__(name: str) -> Any:
    dirs = state.dirs()
    values = {
        "base_path": dirs.base,
        "models_dir": dirs.models,
        "output_directory": dirs.output,
        "input_directory": dirs.input,
        "temp_directory": dirs.temp,
        "user_directory": dirs.user,
    }
    if name in values:
        return values[name]
    raise AttributeError(f"module 'folder_paths' has no attribute {name!r}")


# --- data directories ---------------------------------------------------------------


def get_input_directory() -> str:
    return state.dirs().input


def get_output_directory() -> str:
    return state.dirs().output


def get_temp_directory() -> str:
    return state.dirs().temp


def get_user_directory() -> str:
    return state.dirs().user


def set_input_directory(input_dir: str) -> None:
    state.dirs().input = os.path.abspath(input_dir)


def set_output_directory(output_dir: str) -> None:
    state.dirs().output = os.path.abspath(output_dir)


def set_temp_directory(temp_dir: str) -> None:
    state.dirs().temp = os.path.abspath(temp_dir)


def set_user_directory(user_dir: str) -> None:
    state.dirs().user = os.path.abspath(user_dir)


def get_system_user_directory(name: str = "system") -> str:
    """``<user>/__<name>``: a user directory no HTTP caller can reach."""
    if not name or not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ValueError("System User name must be alphanumeric (underscores allowed)")
    return os.path.join(get_user_directory(), f"__{name}")


def get_public_user_directory(user_id: str) -> str | None:
    if not user_id or user_id.startswith("__"):
        return None
    return os.path.join(get_user_directory(), user_id)


def get_directory_by_type(type_name: str) -> str | None:
    """``output``/``temp``/``input`` to its directory; anything else to None."""
    return state.dirs().by_type(type_name)


# --- annotated file names ---------------------------------------------------------------


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """Split ``"a.png [output]"`` into the bare name and the directory it selects."""
    bare, kind = split_annotation(name)
    return bare, (get_directory_by_type(kind) if kind else None)


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """The path ``name`` names, confined to its directory and, inside output and temp, to what the
    running prompt's owner may open (the kernel's rule for ``/view``); refusals raise ``ValueError``
    (a ``FileNotFoundError`` too when the owner may not open the file)."""
    return state.folders().annotated_path(name, default_dir)


def exists_annotated_filepath(name: str) -> bool:
    try:
        return os.path.exists(get_annotated_filepath(name))
    except ValueError:
        return False


# --- model folders -----------------------------------------------------------------------


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """Add a directory to a folder (an unknown folder is created listing every file)."""
    state.folders().add(folder_name, full_folder_path, is_default=is_default)


def get_folder_paths(folder_name: str) -> list[str]:
    return state.folders().paths(folder_name)


def get_filename_list(folder_name: str) -> list[str]:
    return list(state.folders().list(folder_name))


def get_filename_list_(folder_name: str) -> tuple[list[str], dict[str, float], float]:
    """Uncached listing with the directory mtimes, as ComfyUI's internal helper returns."""
    files, mtimes = recursive_search_all(get_folder_paths(folder_name))
    extensions = state.folders().folders.get(map_legacy(folder_name), Folder([])).extensions
    return sorted(filter_files_extensions(files, extensions)), mtimes, time.perf_counter()


def cached_filename_list_(folder_name: str) -> tuple[list[str], dict[str, float], float] | None:
    """The registry keeps its own validated cache; there is never a stale one to return."""
    return None


def get_full_path(folder_name: str, filename: str) -> str | None:
    return state.folders().full_path(folder_name, filename)


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    return state.folders().full_path_or_raise(folder_name, filename)


def recursive_search(directory: str, excluded_dir_names: list[str] | None = None) -> tuple[list[str], dict[str, float]]:
    """Files under ``directory`` (relative paths) and the mtime of every directory walked."""
    if not os.path.isdir(directory):
        return [], {}
    excluded = set(excluded_dir_names or []) | {".git"}
    files: list[str] = []
    dirs: dict[str, float] = {}
    for root, subdirs, names in os.walk(directory, followlinks=True, topdown=True):
        subdirs[:] = [d for d in subdirs if d not in excluded]
        try:
            dirs[root] = os.path.getmtime(root)
        except OSError:
            continue
        for name in names:
            files.append(os.path.relpath(os.path.join(root, name), directory))
    return files, dirs


def recursive_search_all(directories: Iterable[str]) -> tuple[list[str], dict[str, float]]:
    files: set[str] = set()
    dirs: dict[str, float] = {}
    for directory in directories:
        found, mtimes = recursive_search(directory)
        files.update(found)
        dirs.update(mtimes)
    return list(files), dirs


def filter_files_extensions(files: Iterable[str], extensions: Iterable[str]) -> list[str]:
    """Keep files whose lower-cased extension is listed; an empty list keeps all."""
    wanted = {e.lower() for e in extensions}
    return sorted(f for f in files if not wanted or os.path.splitext(f)[1].lower() in wanted)


def filter_files_content_types(files: list[str], content_types: list[Literal["image", "video", "audio", "model"]]) -> list[str]:
    """Keep files whose content category (from the extension) is one of ``content_types``."""
    wanted = set(content_types)
    return [f for f in files if content_category(f) in wanted]


# --- saving --------------------------------------------------------------------------------


def _expand_prefix_variables(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    values = {"%width%": str(width), "%height%": str(height), "%year%": str(now.tm_year),
              "%month%": f"{now.tm_mon:02d}", "%day%": f"{now.tm_mday:02d}", "%hour%": f"{now.tm_hour:02d}",
              "%minute%": f"{now.tm_min:02d}", "%second%": f"{now.tm_sec:02d}"}
    for key, value in values.items():
        prefix = prefix.replace(key, value)
    return prefix


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0,
                        image_height: int = 0) -> tuple[str, str, int, str, str]:
    """Where the next ``<prefix>_NNNNN_.ext`` goes: ``(folder, file stem, counter, subfolder, prefix)``.

    The counter is one more than the highest already used for that stem in
    the folder, so saving never overwrites; a prefix that climbs out of
    ``output_dir`` is refused.
    """
    if "%" in filename_prefix:
        filename_prefix = _expand_prefix_variables(filename_prefix, image_width, image_height)
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((os.path.abspath(output_dir), os.path.abspath(full_output_folder))) != os.path.abspath(output_dir):
        raise ValueError(f"Saving image outside the output folder is not allowed. full_output_folder: "
                         f"{os.path.abspath(full_output_folder)} output_dir: {output_dir}")
    try:
        existing = os.listdir(full_output_folder)
    except FileNotFoundError:
        os.makedirs(full_output_folder, exist_ok=True)
        existing = []
    highest = 0
    stem = os.path.normcase(filename)
    for name in existing:
        if not os.path.normcase(name).startswith(stem + "_"):
            continue
        digits = name[len(filename) + 1:].split("_")[0]
        if digits.isdigit():
            highest = max(highest, int(digits))
    return full_output_folder, filename, highest + 1, subfolder, filename_prefix


# --- cache_helper ----------------------------------------------------------------------------


class CacheHelper:
    """ComfyUI's opt-in listing cache for bulk lookups. The registry's own cache is always on,
    so this only remembers what callers put in it while active."""

    def __init__(self) -> None:
        self.cache: dict[str, Any] = {}
        self.active = False

    def get(self, key: str, default: Any = None) -> Any:
        return self.cache.get(key, default) if self.active else default

    def set(self, key: str, value: Any) -> None:
        if self.active:
            self.cache[key] = value

    def clear(self) -> None:
        self.cache.clear()

    def __enter__(self) -> CacheHelper:
        self.active = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.active = False
        self.clear()


cache_helper = CacheHelper()


def get_mime_category(filename: str) -> str | None:
    return content_category(filename)

