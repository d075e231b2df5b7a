"""IMAGE and MASK nodes: loading inputs, resizing, inverting, batching, padding, solid colours.

IMAGE is float32 [B, H, W, C] in [0, 1] on the CPU; MASK is float32 [B, H, W]
where 1 marks the region to change (LoadImage's mask is 1 - alpha).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from . import context
from .common import MAX_RESOLUTION, NodeDef
from .latent import CROP_METHODS, common_upscale

IMAGE_UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
MASK_CHANNELS = ["alpha", "red", "green", "blue"]


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _input_path(name: str) -> str | None:
    try:
        path = context.annotated_input_path(name)
    except (ValueError, RuntimeError):
        return None
    return path if os.path.isfile(path) else None


def _open_image(path: str) -> Any:
    from PIL import Image

    return Image.open(path)


def _as_16bit_scaled(frame: Any) -> Any:
    """32-bit integer frames (16-bit PNGs) are brought into 8-bit range before RGB conversion."""
    return frame.point(lambda v: v * (1 / 255)) if frame.mode == "I" else frame


def load_image_file(path: str) -> tuple[Any, Any]:
    """IMAGE [N, H, W, 3] and MASK [N, H, W] of every same-sized frame (EXIF orientation applied)."""
    import numpy as np
    import torch
    from PIL import ImageOps, ImageSequence

    img = _open_image(path)
    images, masks = [], []
    size = None
    for frame in ImageSequence.Iterator(img):
        frame = _as_16bit_scaled(ImageOps.exif_transpose(frame))
        rgb = frame.convert("RGB")
        if size is None:
            size = rgb.size
        if rgb.size != size:
            continue
        images.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)[None])
        if "A" in frame.getbands():
            alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
            mask = 1.0 - torch.from_numpy(alpha)
        elif frame.mode == "P" and "transparency" in frame.info:
            alpha = np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
            mask = 1.0 - torch.from_numpy(alpha)
        else:
            mask = torch.zeros((64, 64), dtype=torch.float32)
        masks.append(mask[None])
    if len(images) > 1 and img.format != "MPO":
        return torch.cat(images), torch.cat(masks)
    return images[0], masks[0]


class LoadImage:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": (context.input_images(), {"image_upload": True})}}

    def load_image(self, image: str) -> tuple[Any, Any]:
        path = _input_path(image)
        if path is None:
            raise FileNotFoundError(f"Invalid image file: {image}")
        return load_image_file(path)

    @classmethod
    def IS_CHANGED(cls, image: str, **_: Any) -> str:
        path = _input_path(image)
        return _file_hash(path) if path else ""

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        return True if _input_path(image) else f"Invalid image file: {image}"


class LoadImageMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": (context.input_files(), {"image_upload": True}),
                             "channel": (MASK_CHANNELS,)}}

    def load_image(self, image: str, channel: str) -> tuple[Any]:
        import numpy as np
        import torch
        from PIL import ImageOps

        path = _input_path(image)
        if path is None:
            raise FileNotFoundError(f"Invalid image file: {image}")
        frame = ImageOps.exif_transpose(_open_image(path))
        if frame.getbands() != ("R", "G", "B", "A"):
            frame = _as_16bit_scaled(frame).convert("RGBA")
        band = channel[0].upper()
        if band in frame.getbands():
            mask = torch.from_numpy(np.asarray(frame.getchannel(band), dtype=np.float32) / 255.0)
            if band == "A":
                mask = 1.0 - mask
        else:
            mask = torch.zeros((64, 64), dtype=torch.float32)
        return (mask[None],)

    @classmethod
    def IS_CHANGED(cls, image: str, **_: Any) -> str:
        path = _input_path(image)
        return _file_hash(path) if path else ""

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        return True if _input_path(image) else f"Invalid image file: {image}"


class ImageScale:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return {"required": {"image": ("IMAGE",), "upscale_method": (IMAGE_UPSCALE_METHODS,),
                             "width": ("INT", size), "height": ("INT", size), "crop": (CROP_METHODS,)}}

    def upscale(self, image: Any, upscale_method: str, width: int, height: int, crop: str) -> tuple[Any]:
        if width == 0 and height == 0:
            return (image,)
        samples = image.movedim(-1, 1)
        if width == 0:
            width = max(1, round(samples.shape[3] * height / samples.shape[2]))
        elif height == 0:
            height = max(1, round(samples.shape[2] * width / samples.shape[3]))
        return (common_upscale(samples, width, height, upscale_method, crop).movedim(1, -1),)


class ImageScaleBy:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "upscale_method": (IMAGE_UPSCALE_METHODS,),
                             "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01})}}

    def upscale(self, image: Any, upscale_method: str, scale_by: float) -> tuple[Any]:
        samples = image.movedim(-1, 1)
        width, height = round(samples.shape[3] * scale_by), round(samples.shape[2] * scale_by)
        return (common_upscale(samples, width, height, upscale_method, "disabled").movedim(1, -1),)


class ImageInvert:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    def invert(self, image: Any) -> tuple[Any]:
        return (1.0 - image,)


class ImageBatch:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

    def batch(self, image1: Any, image2: Any) -> tuple[Any]:
        import torch

        if image1.shape[1:] != image2.shape[1:]:
            image2 = common_upscale(image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bilinear",
                                    "center").movedim(1, -1)
        return (torch.cat((image1, image2), dim=0),)


class ImagePadForOutpaint:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "expand_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        pad = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}
        return {"required": {"image": ("IMAGE",), "left": ("INT", pad), "top": ("INT", pad),
                             "right": ("INT", pad), "bottom": ("INT", pad),
                             "feathering": ("INT", {"default": 40, "min": 0, "max": MAX_RESOLUTION, "step": 1})}}

    def expand_image(self, image: Any, left: int, top: int, right: int, bottom: int,
                     feathering: int) -> tuple[Any, Any]:
        import torch

        b, h, w, c = image.shape
        out = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=image.dtype)
        out[:, top:top + h, left:left + w, :] = image
        mask = torch.ones((h + top + bottom, w + left + right))
        inner = torch.zeros((h, w))
        if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
            rows = torch.arange(h, dtype=torch.float32)[:, None]
            cols = torch.arange(w, dtype=torch.float32)[None, :]
            big_h, big_w = torch.full_like(rows, h), torch.full_like(cols, w)
            dist = torch.minimum(
                torch.minimum(rows if top else big_h, (h - rows) if bottom else big_h),
                torch.minimum(cols if left else big_w, (w - cols) if right else big_w),
            )
            v = (feathering - dist) / feathering
            inner = torch.where(dist < feathering, v * v, torch.zeros_like(v))
        mask[top:top + h, left:left + w] = inner
        return (out, mask[None])


class EmptyImage:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
            "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}),
        }}

    def generate(self, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple[Any]:
        import torch

        rgb = torch.tensor([((color >> 16) & 0xFF) / 0xFF, ((color >> 8) & 0xFF) / 0xFF, (color & 0xFF) / 0xFF],
                           dtype=torch.float32)
        return (rgb.expand(batch_size, height, width, 3).contiguous(),)


NODES = [
    NodeDef("LoadImage", LoadImage, "Load Image", "nodes"),
    NodeDef("LoadImageMask", LoadImageMask, "Load Image (as Mask)", "nodes"),
    NodeDef("ImageScale", ImageScale, "Upscale Image", "nodes"),
    NodeDef("ImageScaleBy", ImageScaleBy, "Upscale Image By", "nodes"),
    NodeDef("ImageInvert", ImageInvert, "Invert Image", "nodes"),
    NodeDef("ImageBatch", ImageBatch, "Batch Images", "nodes"),
    NodeDef("ImagePadForOutpaint", ImagePadForOutpaint, "Pad Image for Outpainting", "nodes"),
    NodeDef("EmptyImage", EmptyImage, "EmptyImage", "nodes"),
]
