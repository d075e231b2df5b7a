"""Geometry of IMAGE batches: crop, flip, rotate, stitch, fit-and-pad, scale to a size budget, size readout."""

from __future__ import annotations

import math
from typing import Any

from comfy_kernel.nodes import io
from comfy_kernel.nodes.resize import common_upscale

from .common import MAX_RESOLUTION, NodeDef

SPACING_COLORS = {"white": 1.0, "black": 0.0, "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0),
                  "blue": (0.0, 0.0, 1.0)}


def _resize(image: Any, width: int, height: int, method: str, crop: str = "disabled") -> Any:
    return common_upscale(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


class ImageCrop:
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}
        pos = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return {"required": {"image": ("IMAGE",), "width": ("INT", size), "height": ("INT", size),
                             "x": ("INT", pos), "y": ("INT", pos)}}

    def crop(self, image: Any, width: int, height: int, x: int, y: int) -> tuple[Any]:
        # An origin past the edge is pulled back onto the last row/column, so the result is never empty.
        x = min(x, image.shape[2] - 1)
        y = min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


class ImageFlip:
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "flip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",),
                             "flip_method": (["x-axis: vertically", "y-axis: horizontally"],)}}

    def flip(self, image: Any, flip_method: str) -> tuple[Any]:
        import torch

        if flip_method.startswith("x"):
            image = torch.flip(image, dims=[1])
        elif flip_method.startswith("y"):
            image = torch.flip(image, dims=[2])
        return (image,)


class ImageRotate:
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "rotate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",),
                             "rotation": (["none", "90 degrees", "180 degrees", "270 degrees"],)}}

    def rotate(self, image: Any, rotation: str) -> tuple[Any]:
        import torch

        quarter_turns = {"90": 1, "180": 2, "270": 3}.get(rotation.split(" ")[0], 0)
        # Clockwise: rotating from the width axis towards the height axis.
        return (torch.rot90(image, k=quarter_turns, dims=[2, 1]),)


def _pad_to(image: Any, size: int, axis: int, value: float) -> Any:
    """Centre ``image`` along ``axis`` (1 = height, 2 = width) in ``size`` pixels of ``value``."""
    import torch.nn.functional as F

    missing = size - image.shape[axis]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    pad = (0, 0, 0, 0, before, after) if axis == 1 else (0, 0, before, after)
    return F.pad(image, pad, mode="constant", value=value)


def _ones_channels(image: Any, channels: int) -> Any:
    import torch

    extra = channels - image.shape[-1]
    if extra <= 0:
        return image
    return torch.cat([image, torch.ones(*image.shape[:-1], extra, device=image.device)], dim=-1)


class ImageStitch:
    DESCRIPTION = ("Joins image2 to image1 on the chosen side, optionally scaling it to match and with a "
                   "coloured gap between them. Without image2, image1 passes through.")
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "stitch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image1": ("IMAGE",),
                "direction": (["right", "down", "left", "up"], {"default": "right"}),
                "match_image_size": ("BOOLEAN", {"default": True}),
                "spacing_width": ("INT", {"default": 0, "min": 0, "max": 1024, "step": 2}),
                "spacing_color": (["white", "black", "red", "green", "blue"], {"default": "white"}),
            },
            "optional": {"image2": ("IMAGE",)},
        }

    def stitch(self, image1: Any, direction: str, match_image_size: bool, spacing_width: int, spacing_color: str,
               image2: Any = None) -> tuple[Any]:
        import torch

        if image2 is None:
            return (image1,)
        horizontal = direction in ("left", "right")
        batch = max(image1.shape[0], image2.shape[0])
        # The shorter batch repeats its last image.
        if image1.shape[0] < batch:
            image1 = torch.cat([image1, image1[-1:].repeat(batch - image1.shape[0], 1, 1, 1)])
        if image2.shape[0] < batch:
            image2 = torch.cat([image2, image2[-1:].repeat(batch - image2.shape[0], 1, 1, 1)])

        color = SPACING_COLORS[spacing_color]
        if match_image_size:
            aspect = image2.shape[2] / image2.shape[1]
            if horizontal:
                size = (int(image1.shape[1] * aspect), image1.shape[1])
            else:
                size = (image1.shape[2], int(image1.shape[2] / aspect))
            image2 = _resize(image2, size[0], size[1], "lanczos")
        else:
            pad_value = color if not isinstance(color, tuple) else 0.0
            axis = 1 if horizontal else 2
            target = max(image1.shape[axis], image2.shape[axis])
            image1 = _pad_to(image1, target, axis, pad_value)
            image2 = _pad_to(image2, target, axis, pad_value)

        channels = max(image1.shape[-1], image2.shape[-1])
        image1, image2 = _ones_channels(image1, channels), _ones_channels(image2, channels)

        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            spacing_width += spacing_width % 2
            if horizontal:
                shape = (image1.shape[0], max(image1.shape[1], image2.shape[1]), spacing_width, channels)
            else:
                shape = (image1.shape[0], spacing_width, max(image1.shape[2], image2.shape[2]), channels)
            spacing = torch.zeros(shape, device=image1.device)
            if isinstance(color, tuple):
                for i, value in enumerate(color[:channels]):
                    spacing[..., i] = value
            else:
                spacing[..., :min(3, channels)] = color
            if channels == 4:
                spacing[..., 3] = 1.0
            parts.insert(1, spacing)
        return (torch.cat(parts, dim=2 if horizontal else 1),)


class ResizeAndPadImage:
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "resize_and_pad"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}
        return {"required": {"image": ("IMAGE",), "target_width": ("INT", size), "target_height": ("INT", size),
                             "padding_color": (["white", "black"],),
                             "interpolation": (["area", "bicubic", "nearest-exact", "bilinear", "lanczos"],)}}

    def resize_and_pad(self, image: Any, target_width: int, target_height: int, padding_color: str,
                       interpolation: str) -> tuple[Any]:
        import torch

        batch, height, width, channels = image.shape
        scale = min(target_width / width, target_height / height)
        new_w, new_h = int(width * scale), int(height * scale)
        resized = common_upscale(image.permute(0, 3, 1, 2), new_w, new_h, interpolation, "disabled")
        out = torch.full((batch, channels, target_height, target_width), 0.0 if padding_color == "black" else 1.0,
                         dtype=image.dtype, device=image.device)
        top, left = (target_height - new_h) // 2, (target_width - new_w) // 2
        out[:, :, top:top + new_h, left:left + new_w] = resized
        return (out.permute(0, 2, 3, 1),)


class ImageScaleToMaxDimension:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    # ComfyUI lists "bilinear" twice; the duplicate is part of its contract.
    upscale_methods = ["area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "upscale_method": (cls.upscale_methods,),
                             "largest_size": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1})}}

    def upscale(self, image: Any, upscale_method: str, largest_size: int) -> tuple[Any]:
        height, width = image.shape[1], image.shape[2]
        if height > width:
            width, height = round((width / height) * largest_size), largest_size
        elif width > height:
            width, height = largest_size, round((height / width) * largest_size)
        else:
            width = height = largest_size
        return (_resize(image, width, height, upscale_method),)


class ImageScaleToTotalPixels(io.ComfyNode):
    upscale_methods = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageScaleToTotalPixels",
            category="image/upscaling",
            inputs=[
                io.Image.Input("image"),
                io.Combo.Input("upscale_method", options=cls.upscale_methods),
                io.Float.Input("megapixels", default=1.0, min=0.01, max=16.0, step=0.01),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image: Any, upscale_method: str, megapixels: float) -> io.NodeOutput:
        total = int(megapixels * 1024 * 1024)
        scale = math.sqrt(total / (image.shape[2] * image.shape[1]))
        width, height = round(image.shape[2] * scale), round(image.shape[1] * scale)
        return io.NodeOutput(_resize(image, width, height, upscale_method))


class GetImageSize:
    DESCRIPTION = "Outputs the width, height and batch size of an image and shows them on the node."
    CATEGORY = "image"
    RETURN_TYPES = ("INT", "INT", "INT")
    RETURN_NAMES = ("width", "height", "batch_size")
    FUNCTION = "get_size"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def get_size(self, image: Any, unique_id: str | None = None) -> tuple[int, int, int]:
        batch, height, width = image.shape[0], image.shape[1], image.shape[2]
        if unique_id:
            send_progress_text(f"width: {width}, height: {height}\n batch size: {batch}", unique_id)
        return (width, height, batch)


def send_progress_text(text: str, node_id: str) -> None:
    """Show ``text`` on node ``node_id`` in the prompt owner's UI (a binary TEXT frame)."""
    import struct

    from comfy_kernel.progress import current_run
    from comfy_kernel.ws import BinaryEventTypes

    run = current_run()
    if run is None:
        return
    node = str(node_id).encode("utf-8")
    run.send_bytes(BinaryEventTypes.TEXT, struct.pack(">I", len(node)) + node + text.encode("utf-8"))


NODES = [
    NodeDef("ImageCrop", ImageCrop, "Image Crop", "comfy_extras.nodes_images"),
    NodeDef("ImageFlip", ImageFlip, "ImageFlip", "comfy_extras.nodes_images"),
    NodeDef("ImageRotate", ImageRotate, "ImageRotate", "comfy_extras.nodes_images"),
    NodeDef("ImageStitch", ImageStitch, "Image Stitch", "comfy_extras.nodes_images"),
    NodeDef("ResizeAndPadImage", ResizeAndPadImage, "ResizeAndPadImage", "comfy_extras.nodes_images"),
    NodeDef("ImageScaleToMaxDimension", ImageScaleToMaxDimension, "ImageScaleToMaxDimension",
            "comfy_extras.nodes_images"),
    NodeDef("ImageScaleToTotalPixels", ImageScaleToTotalPixels, None, "comfy_extras.nodes_post_processing"),
    NodeDef("GetImageSize", GetImageSize, "Get Image Size", "comfy_extras.nodes_images"),
]
