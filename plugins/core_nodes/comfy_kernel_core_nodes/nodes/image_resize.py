"""Resizing nodes newer than ComfyUI 0.3.64 that the frontend's templates use.

ResizeImageMaskNode (one node for IMAGE, MASK and VIDEO with a resize mode
picked from a dynamic combo), ResizeImagesByLongerEdge (the dataset node) and
ResolutionSelector (width/height from an aspect ratio and a megapixel budget).
"""

from __future__ import annotations

import math
from typing import Any

from comfy_kernel.nodes import io
from comfy_kernel.nodes.resize import common_upscale

from .common import MAX_RESOLUTION, NodeDef

SCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CROP_METHODS = ["disabled", "center"]
SCALE_DIMENSIONS = "scale dimensions"
SCALE_BY = "scale by multiplier"
SCALE_LONGER = "scale longer dimension"
SCALE_SHORTER = "scale shorter dimension"
SCALE_WIDTH = "scale width"
SCALE_HEIGHT = "scale height"
SCALE_TOTAL_PIXELS = "scale total pixels"
MATCH_SIZE = "match size"
SCALE_TO_MULTIPLE = "scale to multiple"


def resize_ops(width: int, height: int, method: str, resize: dict[str, Any],
               match_size: tuple[int, int] | None = None) -> list[tuple]:
    """The resize of a ``width`` x ``height`` input as steps: ("scale", w, h, method, crop), ("crop", x, y, w, h).

    An empty list leaves the input unchanged.
    """
    kind = resize["resize_type"]
    crop = "disabled"
    if kind == SCALE_BY:
        target_w, target_h = round(width * resize["multiplier"]), round(height * resize["multiplier"])
    elif kind in (SCALE_DIMENSIONS, SCALE_WIDTH, SCALE_HEIGHT):
        if kind == SCALE_DIMENSIONS:
            target_w, target_h, crop = resize["width"], resize["height"], resize["crop"]
        elif kind == SCALE_WIDTH:
            target_w, target_h = resize["width"], 0
        else:
            target_w, target_h = 0, resize["height"]
        if target_w == 0 and target_h == 0:
            return []
        if target_w == 0:
            target_w = max(1, round(width * target_h / height))
        elif target_h == 0:
            target_h = max(1, round(height * target_w / width))
    elif kind == SCALE_LONGER:
        size = resize["longer_size"]
        if height > width:
            target_w, target_h = round((width / height) * size), size
        elif width > height:
            target_w, target_h = size, round((height / width) * size)
        else:
            target_w = target_h = size
    elif kind == SCALE_SHORTER:
        size = resize["shorter_size"]
        if height < width:
            target_w, target_h = round((width / height) * size), size
        elif width < height:
            target_w, target_h = size, round((height / width) * size)
        else:
            target_w = target_h = size
    elif kind == SCALE_TOTAL_PIXELS:
        scale = math.sqrt(int(resize["megapixels"] * 1024 * 1024) / (width * height))
        target_w, target_h = round(width * scale), round(height * scale)
    elif kind == MATCH_SIZE:
        target_w, target_h = match_size
        crop = resize["crop"]
    elif kind == SCALE_TO_MULTIPLE:
        multiple = resize["multiple"]
        if multiple <= 1:
            return []
        crop_w, crop_h = (width // multiple) * multiple, (height // multiple) * multiple
        if crop_w == 0 or crop_h == 0 or (crop_w == width and crop_h == height):
            return []
        # Cover the multiple-aligned size first, then cut its centre.
        if crop_w / width >= crop_h / height:
            target_w, target_h = crop_w, max(crop_h, int(math.ceil(height * crop_w / width)))
        else:
            target_w, target_h = max(crop_w, int(math.ceil(width * crop_h / height))), crop_h
        return [("scale", target_w, target_h, method, "disabled"),
                ("crop", (target_w - crop_w) // 2, (target_h - crop_h) // 2, crop_w, crop_h)]
    else:
        raise ValueError(f"Unsupported resize type: {kind}")
    return [("scale", int(target_w), int(target_h), method, crop)]


def apply_ops(tensor: Any, ops: list[tuple], is_mask: bool) -> Any:
    """Run :func:`resize_ops` steps on an IMAGE [B, H, W, C] or a MASK [B, H, W]."""
    work = tensor.unsqueeze(1) if is_mask else tensor.movedim(-1, 1)
    for op in ops:
        if op[0] == "scale":
            work = common_upscale(work, op[1], op[2], op[3], op[4])
        else:
            _, x, y, w, h = op
            work = work[..., y:y + h, x:x + w]
    return (work.squeeze(1) if is_mask else work.movedim(1, -1)).contiguous()


def _size_of(value: Any) -> tuple[int, int]:
    """(width, height) of an IMAGE, a MASK or a video object."""
    if hasattr(value, "get_dimensions") and not hasattr(value, "shape"):
        getter = getattr(value, "get_display_dimensions", value.get_dimensions)
        return tuple(getter())  # type: ignore[return-value]
    if value.ndim == 4:
        return value.shape[-2], value.shape[-3]
    return value.shape[-1], value.shape[-2]


class ResizeImageMaskNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        template = io.MatchType.Template("input_type", [io.Image, io.Mask, io.Video])
        crop = io.Combo.Input("crop", options=CROP_METHODS, default="center",
                              tooltip="On an aspect mismatch: 'disabled' stretches, 'center' crops the centre.")
        size = {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return io.Schema(
            node_id="ResizeImageMaskNode",
            display_name="Resize Image/Mask/Video",
            description="Resizes an image, mask or video by one of several rules.",
            category="image/transform",
            search_aliases=["resize", "resize image", "resize mask", "resize video", "scale", "scale image",
                            "scale mask", "scale video", "image resize", "change size", "dimensions", "shrink",
                            "enlarge"],
            inputs=[
                io.MatchType.Input("input", template=template),
                io.DynamicCombo.Input("resize_type", tooltip="How the new size is chosen.", options=[
                    io.DynamicCombo.Option(SCALE_DIMENSIONS, [
                        io.Int.Input("width", **size, tooltip="Target width; 0 follows the height's scale."),
                        io.Int.Input("height", **size, tooltip="Target height; 0 follows the width's scale."),
                        crop,
                    ]),
                    io.DynamicCombo.Option(SCALE_BY, [
                        io.Float.Input("multiplier", default=1.00, min=0.01, max=8.0, step=0.01),
                    ]),
                    io.DynamicCombo.Option(SCALE_LONGER, [io.Int.Input("longer_size", **size)]),
                    io.DynamicCombo.Option(SCALE_SHORTER, [io.Int.Input("shorter_size", **size)]),
                    io.DynamicCombo.Option(SCALE_WIDTH, [io.Int.Input("width", **size)]),
                    io.DynamicCombo.Option(SCALE_HEIGHT, [io.Int.Input("height", **size)]),
                    io.DynamicCombo.Option(SCALE_TOTAL_PIXELS, [
                        io.Float.Input("megapixels", default=1.0, min=0.01, max=16.0, step=0.01),
                    ]),
                    io.DynamicCombo.Option(MATCH_SIZE, [
                        io.Custom("IMAGE,MASK,VIDEO").Input("match", tooltip="Take the size of this input."),
                        crop,
                    ]),
                    io.DynamicCombo.Option(SCALE_TO_MULTIPLE, [
                        io.Int.Input("multiple", default=8, min=1, max=MAX_RESOLUTION, step=1),
                    ]),
                ]),
                io.Combo.Input("scale_method", options=SCALE_METHODS, default="area",
                               tooltip="Interpolation: area suits shrinking, lanczos enlarging."),
            ],
            outputs=[io.MatchType.Output(template=template, display_name="resized")],
        )

    @classmethod
    def execute(cls, input: Any, scale_method: str, resize_type: dict[str, Any]) -> io.NodeOutput:  # noqa: A002
        width, height = _size_of(input)
        match = _size_of(resize_type["match"]) if resize_type["resize_type"] == MATCH_SIZE else None
        ops = resize_ops(width, height, scale_method, resize_type, match)
        if not ops:
            return io.NodeOutput(input)
        if not hasattr(input, "shape"):
            if not hasattr(input, "as_resized"):
                raise TypeError(f"cannot resize a {type(input).__name__}")
            _, w, h, method, crop = ops[0]
            return io.NodeOutput(input.as_resized(w, h, method, crop, ops[1][1:] if len(ops) > 1 else None))
        return io.NodeOutput(apply_ops(input, ops, is_mask=input.ndim != 4))


class ResizeImagesByLongerEdge(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ResizeImagesByLongerEdge",
            display_name="Resize Images by Longer Edge",
            description="Lanczos-resizes images so their longer edge has the given length, keeping the aspect ratio.",
            category="dataset/image",
            is_experimental=True,
            inputs=[
                io.Image.Input("images", tooltip="Images to resize."),
                io.Int.Input("longer_edge", default=1024, min=1, max=8192, tooltip="Length of the longer edge."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The resized images.")],
        )

    @classmethod
    def execute(cls, images: Any, longer_edge: int) -> io.NodeOutput:
        import numpy as np
        import torch
        from PIL import Image

        height, width = images.shape[1], images.shape[2]
        if width > height:
            size = (longer_edge, int(height * (longer_edge / width)))
        else:
            size = (int(width * (longer_edge / height)), longer_edge)
        out = []
        for image in images:
            pil = Image.fromarray((image.cpu().numpy() * 255).clip(0, 255).astype(np.uint8))
            resized = np.array(pil.resize(size, Image.Resampling.LANCZOS)).astype(np.float32) / 255.0
            out.append(torch.from_numpy(resized))
        return io.NodeOutput(torch.stack(out))


ASPECT_RATIOS = {"1:1 (Square)": (1, 1), "3:2 (Photo)": (3, 2), "4:3 (Standard)": (4, 3),
                 "16:9 (Widescreen)": (16, 9), "21:9 (Ultrawide)": (21, 9), "2:3 (Portrait Photo)": (2, 3),
                 "3:4 (Portrait Standard)": (3, 4), "9:16 (Portrait Widescreen)": (9, 16)}


def resolution(aspect_ratio: str, megapixels: float, multiple: int) -> tuple[int, int]:
    """Width and height with the ratio's shape, about ``megapixels`` (of 1024^2) in area, rounded to ``multiple``."""
    w_ratio, h_ratio = ASPECT_RATIOS[aspect_ratio]
    scale = math.sqrt(megapixels * 1024 * 1024 / (w_ratio * h_ratio))
    return round(w_ratio * scale / multiple) * multiple, round(h_ratio * scale / multiple) * multiple


class ResolutionSelector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ResolutionSelector",
            display_name="Resolution Selector",
            category="utilities",
            description="Width and height for an aspect ratio and a megapixel budget, e.g. for Empty Latent Image.",
            inputs=[
                io.Combo.Input("aspect_ratio", options=list(ASPECT_RATIOS), default="1:1 (Square)",
                               tooltip="Shape of the result."),
                io.Float.Input("megapixels", default=1.0, min=0.1, max=16.0, step=0.1,
                               tooltip="Area in megapixels of 1024x1024 pixels."),
                io.Custom("RESOLUTION_PREVIEW").Input(
                    "preview", optional=True, socketless=True, ratio_widget="aspect_ratio",
                    megapixels_widget="megapixels", multiple_widget="multiple",
                    tooltip="Shows the resulting size on the node."),
                io.Int.Input("multiple", default=8, min=8, max=128, step=4, advanced=True,
                             tooltip="Both sides are rounded to a multiple of this."),
            ],
            outputs=[io.Int.Output("width", display_name="width", tooltip="Width in pixels."),
                     io.Int.Output("height", display_name="height", tooltip="Height in pixels.")],
        )

    @classmethod
    def execute(cls, aspect_ratio: str, megapixels: float, multiple: int = 8, preview: Any = None) -> io.NodeOutput:
        return io.NodeOutput(*resolution(aspect_ratio, megapixels, multiple))


NODES = [
    NodeDef("ResizeImageMaskNode", ResizeImageMaskNode, None, "comfy_extras.nodes_post_processing"),
    NodeDef("ResizeImagesByLongerEdge", ResizeImagesByLongerEdge, None, "comfy_extras.nodes_dataset"),
    NodeDef("ResolutionSelector", ResolutionSelector, None, "comfy_extras.nodes_resolution"),
]
