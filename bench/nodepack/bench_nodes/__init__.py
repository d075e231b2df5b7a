"""Minimal stand-ins for the five core nodes the executor benchmark uses.

Same names, inputs and outputs as ComfyUI's EmptyImage, ImageInvert,
PreviewImage, PrimitiveInt and PreviewAny, doing comparable work (numpy
images, a PNG written to the temp folder), so the benchmark measures the
executor and not model code. Loaded only by ``bench/executor.py``.
"""

from __future__ import annotations

import os
import random

import numpy as np
from PIL import Image


class EmptyImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 512, "min": 1, "max": 16384}),
                             "height": ("INT", {"default": 512, "min": 1, "max": 16384}),
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                             "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"
    CATEGORY = "image"

    def generate(self, width, height, batch_size=1, color=0):
        rgb = np.array([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=np.float32) / 255.0
        return (np.broadcast_to(rgb, (batch_size, height, width, 3)).copy(),)


class ImageInvert:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"
    CATEGORY = "image"

    def invert(self, image):
        return (1.0 - image,)


class PreviewImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    temp_dir = os.path.join(os.getcwd(), "temp")

    def save_images(self, images, prompt=None, extra_pnginfo=None):
        os.makedirs(self.temp_dir, exist_ok=True)
        prefix = "ComfyUI_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        results = []
        for i, image in enumerate(images):
            name = f"{prefix}_{i:05}_.png"
            Image.fromarray(np.clip(image * 255.0, 0, 255).astype(np.uint8)).save(
                os.path.join(self.temp_dir, name), compress_level=1)
            results.append({"filename": name, "subfolder": "", "type": "temp"})
        return {"ui": {"images": results}}


class PrimitiveInt:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"min": -(2**63), "max": 2**63 - 1})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "execute"
    CATEGORY = "utils/primitive"

    def execute(self, value):
        return (value,)


class AnyType(str):
    def __ne__(self, other):
        return False


class PreviewAny:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"source": (AnyType("*"), {})}}

    RETURN_TYPES = ()
    FUNCTION = "main"
    OUTPUT_NODE = True
    CATEGORY = "utils"

    def main(self, source=None):
        return {"ui": {"text": [str(source)]}}


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (EmptyImage, ImageInvert, PreviewImage, PrimitiveInt, PreviewAny)}
