"""SaveImage and PreviewImage: PNG files with ComfyUI's names and metadata (server spec §10).

File names are reserved with an exclusive create, so two workers saving with
the same prefix at the same moment never overwrite each other: the loser of a
race simply takes the next counter. With a cluster's remote store (see
``comfy_kernel.files.remote``) the name is claimed in the store as well, so
workers with separate output directories cannot collide either.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from . import context
from .common import NodeDef

PREVIEW_ALPHABET = "abcdefghijklmnopqrstupvxyz"  # as ComfyUI: 'p' twice, no 'w'


class UnsafeSavePath(ValueError):
    pass


def expand_tokens(prefix: str, width: int, height: int) -> str:
    """``%width%``, ``%height%`` and local-time tokens; other ``%`` text stays literal."""
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {
        "%width%": str(width), "%height%": str(height), "%year%": str(now.tm_year),
        "%month%": f"{now.tm_mon:02d}", "%day%": f"{now.tm_mday:02d}", "%hour%": f"{now.tm_hour:02d}",
        "%minute%": f"{now.tm_min:02d}", "%second%": f"{now.tm_sec:02d}",
    }
    for token, value in values.items():
        prefix = prefix.replace(token, value)
    return prefix


def split_prefix(prefix: str, base: str, width: int, height: int) -> tuple[str, str, str]:
    """``(folder, filename, subfolder)`` of a prefix below ``base``; refuses anything outside it."""
    normalised = os.path.normpath(expand_tokens(prefix, width, height))
    subfolder, filename = os.path.dirname(normalised), os.path.basename(normalised)
    base = os.path.abspath(base)
    folder = os.path.abspath(os.path.join(base, subfolder))
    if os.path.commonpath((base, folder)) != base:
        raise UnsafeSavePath("**** ERROR: Saving image outside the output folder is not allowed."
                             f"\n full_output_folder: {folder}\n         output_dir: {base}")
    return folder, filename, subfolder


#: (folder, filename) -> (the folder's mtime right after our last save there, next counter).
#: While the folder's mtime is unchanged nobody else touched it, so the counter a scan
#: would find is known without listing a folder that grows by a file per save (a listing
#: of 1,500 previews costs about 1 ms, a stat a few µs). Names stay unique regardless:
#: ``reserve`` opens exclusively.
_counters: dict[tuple[str, str], tuple[int, int]] = {}


def next_counter(folder: str, filename: str) -> int:
    """1 + the largest counter of entries named ``<filename>_<n>...`` in ``folder`` (1 if none)."""
    try:
        mtime = os.stat(folder).st_mtime_ns
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return 1
    known = _counters.get((folder, filename))
    if known is not None and known[0] == mtime:
        return known[1]
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return 1
    shared = context.shared_store()
    if shared is not None:  # names other machines took (once per folder and stem; claims cover the rest)
        entries = [*entries, *shared.remote_names(folder, filename + "_")]
    n = len(filename)
    best = 0
    for entry in entries:
        if entry[:n] != filename or entry[n:n + 1] != "_":
            continue
        try:
            number = int(entry[n + 1:].split("_", 1)[0])
        except ValueError:
            number = 0
        best = max(best, number)
    return best + 1


def reserve(folder: str, filename: str, counter: int, ext: str = "png", tail: str = "_") -> tuple[Any, str, int]:
    """Open ``<filename>_<counter:05><tail>.<ext>`` exclusively, moving on while names are taken.

    ``tail`` is ``"_"`` for ComfyUI's classic savers; SaveImageAdvanced names files without it.
    """
    while True:
        name = f"{filename}_{counter:05}{tail}.{ext}"
        path = os.path.join(folder, name)
        try:
            handle = open(path, "xb")
        except FileExistsError:
            counter += 1
            continue
        shared = context.shared_store()
        if shared is not None and not shared.claim_remote(path):  # another machine saved this name
            handle.close()
            os.remove(path)
            counter += 1
            continue
        try:  # remember where a scan would land next time (see _counters)
            _counters[(folder, filename)] = (os.stat(folder).st_mtime_ns, counter + 1)
        except OSError:
            _counters.pop((folder, filename), None)
        return handle, name, counter


def png_metadata(prompt: Any, extra_pnginfo: Any) -> Any:
    """tEXt chunks: ``prompt``, then one per extra_pnginfo key, JSON in Python's default formatting."""
    if context.option("disable_metadata", False):
        return None
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            info.add_text(key, json.dumps(value))
    return info


def to_uint8(image: Any) -> Any:
    """IMAGE item [H, W, C] in [0, 1] -> uint8 array, 255 * x clipped and truncated (not rounded)."""
    import numpy as np

    return np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)


def save_images(images: Any, prefix: str, base: str, kind: str, compress_level: int, prompt: Any,
                extra_pnginfo: Any) -> list[dict[str, str]]:
    from PIL import Image

    folder, filename, subfolder = split_prefix(prefix, base, images.shape[2], images.shape[1])
    counters: dict[str, int] = {}
    results = []
    metadata = png_metadata(prompt, extra_pnginfo)
    for index, image in enumerate(images):
        name = filename.replace("%batch_num%", str(index))
        counter = counters.get(name) or next_counter(folder, name)
        pil = Image.fromarray(to_uint8(image))
        handle, file, counter = reserve(folder, name, counter)
        with handle:
            pil.save(handle, format="PNG", pnginfo=metadata, compress_level=compress_level)
        counters[name] = counter + 1
        results.append({"filename": file, "subfolder": subfolder, "type": kind})
    return results


class SaveImage:
    DESCRIPTION = "Saves images as PNG files in the output directory."
    CATEGORY = "image"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": (
                    "File name prefix; may contain a subfolder and %width%, %height%, %year% ... tokens.")}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save_images(self, images: Any, filename_prefix: str = "ComfyUI", prompt: Any = None,
                    extra_pnginfo: Any = None) -> dict[str, Any]:
        results = save_images(images, filename_prefix, context.output_dir(), "output", 4, prompt, extra_pnginfo)
        return {"ui": {"images": results}}


class PreviewImage:
    DESCRIPTION = "Shows images in the UI, saved as temporary files."
    CATEGORY = "image"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    def __init__(self) -> None:
        self.prefix_append = "_temp_" + "".join(random.choice(PREVIEW_ALPHABET) for _ in range(5))

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",)},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_images(self, images: Any, filename_prefix: str = "ComfyUI", prompt: Any = None,
                    extra_pnginfo: Any = None) -> dict[str, Any]:
        prefix = filename_prefix + self.prefix_append
        results = save_images(images, prefix, context.temp_dir(), "temp", 1, prompt, extra_pnginfo)
        return {"ui": {"images": results}}


NODES = [
    NodeDef("SaveImage", SaveImage, "Save Image", "nodes"),
    NodeDef("PreviewImage", PreviewImage, "Preview Image", "nodes"),
]
