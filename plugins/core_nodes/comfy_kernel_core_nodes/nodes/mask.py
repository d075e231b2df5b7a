"""MASK nodes (ComfyUI's nodes_mask): conversions, solid/invert/crop/threshold, composites, feather, grow, preview.

MASK is float [B, H, W]; most nodes accept any [..., H, W] and flatten the
leading dimensions into the batch, as ComfyUI does.
"""

from __future__ import annotations

import random
from typing import Any

from .common import MAX_RESOLUTION, NodeDef
from .image_ops import alpha_fix, as_mask_batch, paste

_POS = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}
_SIZE = {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}


class LatentCompositeMasked:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        pos = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}
        return {"required": {"destination": ("LATENT",), "source": ("LATENT",), "x": ("INT", pos),
                             "y": ("INT", pos), "resize_source": ("BOOLEAN", {"default": False})},
                "optional": {"mask": ("MASK",)}}

    def composite(self, destination: dict[str, Any], source: dict[str, Any], x: int, y: int, resize_source: bool,
                  mask: Any = None) -> tuple[dict[str, Any]]:
        out = destination.copy()
        out["samples"] = paste(destination["samples"].clone(), source["samples"], x, y, mask, 8, resize_source)
        return (out,)


class ImageCompositeMasked:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"destination": ("IMAGE",), "source": ("IMAGE",), "x": ("INT", _POS), "y": ("INT", _POS),
                             "resize_source": ("BOOLEAN", {"default": False})},
                "optional": {"mask": ("MASK",)}}

    def composite(self, destination: Any, source: Any, x: int, y: int, resize_source: bool,
                  mask: Any = None) -> tuple[Any]:
        destination, source = alpha_fix(destination, source)
        out = paste(destination.clone().movedim(-1, 1), source.movedim(-1, 1), x, y, mask, 1, resize_source)
        return (out.movedim(1, -1),)


class MaskToImage:
    CATEGORY = "mask"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mask_to_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK",)}}

    def mask_to_image(self, mask: Any) -> tuple[Any]:
        return (mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3),)


class ImageToMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"
    CHANNELS = ["red", "green", "blue", "alpha"]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "channel": (cls.CHANNELS,)}}

    def image_to_mask(self, image: Any, channel: str) -> tuple[Any]:
        return (image[:, :, :, self.CHANNELS.index(channel)],)


class ImageColorToMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",),
                             "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"})}}

    def image_to_mask(self, image: Any, color: int) -> tuple[Any]:
        import torch

        rgb = (torch.clamp(image, 0, 1.0) * 255.0).round().to(torch.int)
        packed = (rgb[:, :, :, 0] << 16) + (rgb[:, :, :, 1] << 8) + rgb[:, :, :, 2]
        return (torch.where(packed == color, 1.0, 0).float(),)


class SolidMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "solid"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                             "width": ("INT", _SIZE), "height": ("INT", _SIZE)}}

    def solid(self, value: float, width: int, height: int) -> tuple[Any]:
        import torch

        return (torch.full((1, height, width), value, dtype=torch.float32, device="cpu"),)


class InvertMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK",)}}

    def invert(self, mask: Any) -> tuple[Any]:
        return (1.0 - mask,)


class CropMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK",), "x": ("INT", _POS), "y": ("INT", _POS), "width": ("INT", _SIZE),
                             "height": ("INT", _SIZE)}}

    def crop(self, mask: Any, x: int, y: int, width: int, height: int) -> tuple[Any]:
        return (as_mask_batch(mask)[:, y:y + height, x:x + width],)


class MaskComposite:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"destination": ("MASK",), "source": ("MASK",), "x": ("INT", _POS), "y": ("INT", _POS),
                             "operation": (["multiply", "add", "subtract", "and", "or", "xor"],)}}

    def combine(self, destination: Any, source: Any, x: int, y: int, operation: str) -> tuple[Any]:
        import torch

        out = as_mask_batch(destination).clone()
        source = as_mask_batch(source)
        right = min(x + source.shape[-1], out.shape[-1])
        bottom = min(y + source.shape[-2], out.shape[-2])
        src = source[:, :bottom - y, :right - x]
        dst = out[:, y:bottom, x:right]
        if operation == "multiply":
            result = dst * src
        elif operation == "add":
            result = dst + src
        elif operation == "subtract":
            result = dst - src
        else:
            logical = {"and": torch.bitwise_and, "or": torch.bitwise_or, "xor": torch.bitwise_xor}[operation]
            result = logical(dst.round().bool(), src.round().bool()).float()
        out[:, y:bottom, x:right] = result
        return (torch.clamp(out, 0.0, 1.0),)


class FeatherMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "feather"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK",), "left": ("INT", _POS), "top": ("INT", _POS), "right": ("INT", _POS),
                             "bottom": ("INT", _POS)}}

    def feather(self, mask: Any, left: int, top: int, right: int, bottom: int) -> tuple[Any]:
        out = as_mask_batch(mask).clone()
        left, right = min(left, out.shape[-1]), min(right, out.shape[-1])
        top, bottom = min(top, out.shape[-2]), min(bottom, out.shape[-2])
        # Linear ramps from each edge. ComfyUI indexes the right/bottom ramps as -i, so their first step
        # lands on column/row 0 rather than the last one; that quirk is kept for identical output.
        for i in range(left):
            out[:, :, i] *= (i + 1.0) / left
        for i in range(right):
            out[:, :, -i] *= (i + 1) / right
        for i in range(top):
            out[:, i, :] *= (i + 1) / top
        for i in range(bottom):
            out[:, -i, :] *= (i + 1) / bottom
        return (out,)


def grow_mask(mask: Any, expand: int, tapered_corners: bool) -> Any:
    """Grey dilation (erosion for negative ``expand``) by a 3x3 cross or square, |expand| times, edge-replicated."""
    import torch
    import torch.nn.functional as F

    out = as_mask_batch(mask)
    if expand == 0:
        return out.clone()
    corner = 0 if tapered_corners else 1
    footprint = torch.tensor([[corner, 1, corner], [1, 1, 1], [corner, 1, corner]], dtype=torch.bool)
    shifts = [(dy - 1, dx - 1) for dy in range(3) for dx in range(3) if footprint[dy, dx]]
    reduce = torch.maximum if expand > 0 else torch.minimum
    h, w = out.shape[-2:]
    for _ in range(abs(expand)):
        padded = F.pad(out.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
        result = None
        for dy, dx in shifts:
            view = padded[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
            result = view if result is None else reduce(result, view)
        out = result
    return out


class GrowMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "expand_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "mask": ("MASK",),
            "expand": ("INT", {"default": 0, "min": -MAX_RESOLUTION, "max": MAX_RESOLUTION, "step": 1}),
            "tapered_corners": ("BOOLEAN", {"default": True}),
        }}

    def expand_mask(self, mask: Any, expand: int, tapered_corners: bool) -> tuple[Any]:
        return (grow_mask(mask, expand, tapered_corners),)


class ThresholdMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK",),
                             "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def image_to_mask(self, mask: Any, value: float) -> tuple[Any]:
        return ((mask > value).float(),)


class MaskPreview:
    DESCRIPTION = "Shows a mask in the UI as a grey image (saved as a temporary PNG)."
    CATEGORY = "mask"
    RETURN_TYPES = ()
    FUNCTION = "execute"
    OUTPUT_NODE = True

    def __init__(self) -> None:
        from .save import PREVIEW_ALPHABET

        self.prefix_append = "_temp_" + "".join(random.choice(PREVIEW_ALPHABET) for _ in range(5))

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def execute(self, mask: Any, filename_prefix: str = "ComfyUI", prompt: Any = None,
                extra_pnginfo: Any = None) -> dict[str, Any]:
        from . import context
        from .save import save_images

        preview = MaskToImage().mask_to_image(mask)[0]
        results = save_images(preview, filename_prefix + self.prefix_append, context.temp_dir(), "temp", 4, prompt,
                              extra_pnginfo)
        return {"ui": {"images": results}}


NODES = [
    NodeDef("LatentCompositeMasked", LatentCompositeMasked, "LatentCompositeMasked", "comfy_extras.nodes_mask"),
    NodeDef("ImageCompositeMasked", ImageCompositeMasked, "ImageCompositeMasked", "comfy_extras.nodes_mask"),
    NodeDef("MaskToImage", MaskToImage, "Convert Mask to Image", "comfy_extras.nodes_mask"),
    NodeDef("ImageToMask", ImageToMask, "Convert Image to Mask", "comfy_extras.nodes_mask"),
    NodeDef("ImageColorToMask", ImageColorToMask, "ImageColorToMask", "comfy_extras.nodes_mask"),
    NodeDef("SolidMask", SolidMask, "SolidMask", "comfy_extras.nodes_mask"),
    NodeDef("InvertMask", InvertMask, "InvertMask", "comfy_extras.nodes_mask"),
    NodeDef("CropMask", CropMask, "CropMask", "comfy_extras.nodes_mask"),
    NodeDef("MaskComposite", MaskComposite, "MaskComposite", "comfy_extras.nodes_mask"),
    NodeDef("FeatherMask", FeatherMask, "FeatherMask", "comfy_extras.nodes_mask"),
    NodeDef("GrowMask", GrowMask, "GrowMask", "comfy_extras.nodes_mask"),
    NodeDef("ThresholdMask", ThresholdMask, "ThresholdMask", "comfy_extras.nodes_mask"),
    NodeDef("MaskPreview", MaskPreview, "MaskPreview", "comfy_extras.nodes_mask"),
]
