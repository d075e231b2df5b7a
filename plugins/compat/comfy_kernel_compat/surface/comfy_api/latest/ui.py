"""``comfy_api.latest.ui``: what V3 nodes return as their UI result.

The kernel's ``io.ui`` helpers (``SavedResult``, ``SavedImages``,
``SavedAudios``, ``PreviewText``) are re-exported; the image previews and
save helpers are added here: they write PNGs where ComfyUI does (temp or
output directory, ``<prefix>_NNNNN_.png``) and render the ``ui`` dict the
frontend reads.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

from comfy_kernel.nodes.io import ui as _kernel_ui

SavedResult = _kernel_ui.SavedResult
SavedImages = _kernel_ui.SavedImages
SavedAudios = _kernel_ui.SavedAudios
PreviewText = _kernel_ui.PreviewText


class _UIOutput:
    """A UI result object: the executor renders it with ``as_dict()``."""

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError

_ALPHABET = "abcdefghijklmnopqrstupvxyz"


def _metadata(cls: Any) -> Any:
    """PNG text chunks with the prompt and workflow, unless --disable-metadata."""
    from comfy.cli_args import args
    from PIL.PngImagePlugin import PngInfo

    hidden = getattr(cls, "hidden", None) if cls is not None else None
    if hidden is None or args.disable_metadata:
        return None
    info = PngInfo()
    if getattr(hidden, "prompt", None) is not None:
        info.add_text("prompt", json.dumps(hidden.prompt))
    for key, value in (getattr(hidden, "extra_pnginfo", None) or {}).items():
        info.add_text(key, json.dumps(value))
    return info


class ImageSaveHelper:
    """Save an IMAGE batch as PNG files and describe them for the UI."""

    @staticmethod
    def save_images(images: Any, filename_prefix: str, folder_type: str = "output", cls: Any = None,
                    compress_level: int = 4) -> list[SavedResult]:
        import folder_paths
        import numpy as np
        from PIL import Image

        directory = folder_paths.get_directory_by_type(folder_type)
        if directory is None:
            raise ValueError(f"unknown folder type {folder_type!r}")
        height, width = int(images.shape[1]), int(images.shape[2])
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, directory, width, height)
        metadata = _metadata(cls)
        results = []
        for index, image in enumerate(images):
            array = np.clip(image.detach().cpu().float().numpy() * 255.0, 0, 255).astype(np.uint8)
            filename = f"{name.replace('%batch_num%', str(index))}_{counter:05}_.png"
            Image.fromarray(array).save(os.path.join(folder, filename), pnginfo=metadata, compress_level=compress_level)
            results.append(SavedResult(filename, subfolder, folder_type))
            counter += 1
        return results

    @staticmethod
    def get_save_images_ui(images: Any, filename_prefix: str, cls: Any = None, compress_level: int = 4) -> SavedImages:
        return SavedImages(ImageSaveHelper.save_images(images, filename_prefix, "output", cls, compress_level))


class PreviewImage(_UIOutput):
    """Show an IMAGE batch: saved as temporary PNGs (fast compression)."""

    def __init__(self, image: Any, animated: bool = False, cls: Any = None, **kwargs: Any):
        prefix = "ComfyUI_temp_" + "".join(random.choice(_ALPHABET) for _ in range(5))
        self.values = ImageSaveHelper.save_images(image, prefix, "temp", cls, compress_level=1)
        self.animated = animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": list(self.values), "animated": [self.animated]}


class PreviewMask(PreviewImage):
    """Show a MASK batch as greyscale images."""

    def __init__(self, mask: Any, animated: bool = False, cls: Any = None, **kwargs: Any):
        image = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        super().__init__(image, animated, cls)


class PreviewUI3D(_UIOutput):
    def __init__(self, model_file: str, camera_info: Any, **kwargs: Any):
        self.model_file, self.camera_info = model_file, camera_info

    def as_dict(self) -> dict[str, Any]:
        return {"result": [self.model_file, self.camera_info]}


__all__ = ["SavedResult", "SavedImages", "SavedAudios", "PreviewText", "PreviewImage", "PreviewMask",
           "PreviewUI3D", "ImageSaveHelper"]
