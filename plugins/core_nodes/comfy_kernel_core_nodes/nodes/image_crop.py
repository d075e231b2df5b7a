"""Cropping nodes newer than ComfyUI 0.3.64: crop by a bounding-box widget, crop to a mask's subject, BoundingBox."""

from __future__ import annotations

import math
from typing import Any

from comfy_kernel.nodes import io
from comfy_kernel.nodes.resize import common_upscale

from .common import MAX_RESOLUTION, NodeDef
from .image_ops import hex_to_rgb


class ImageCropV2(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageCropV2",
            display_name="Crop Image",
            description="Crops an image to a rectangle drawn on the node.",
            category="image/transform",
            search_aliases=["crop", "cut", "trim"],
            inputs=[
                io.Image.Input("image"),
                io.BoundingBox.Input("crop_region", component="ImageCrop"),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image: Any, crop_region: dict[str, Any]) -> io.NodeOutput:
        from .save import PreviewImage

        x, y = crop_region.get("x", 0), crop_region.get("y", 0)
        width, height = crop_region.get("width", 512), crop_region.get("height", 512)
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        cropped = image[:, y:y + height, x:x + width, :]
        return io.NodeOutput(cropped, ui=PreviewImage().save_images(cropped)["ui"])


class PrimitiveBoundingBox(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PrimitiveBoundingBox",
            display_name="Bounding Box",
            category="utilities/primitive",
            inputs=[
                io.Int.Input("x", default=0, min=0, max=MAX_RESOLUTION),
                io.Int.Input("y", default=0, min=0, max=MAX_RESOLUTION),
                io.Int.Input("width", default=512, min=1, max=MAX_RESOLUTION),
                io.Int.Input("height", default=512, min=1, max=MAX_RESOLUTION),
            ],
            outputs=[io.BoundingBox.Output()],
        )

    @classmethod
    def execute(cls, x: int, y: int, width: int, height: int) -> io.NodeOutput:
        return io.NodeOutput({"x": x, "y": y, "width": width, "height": height})


def crop_to_subject(image: Any, mask: Any, max_size: int, pad_factor: float, grow: int, background: tuple,
                    aspect: float) -> Any:
    """[1, 3, h, w] crop around the mask's subject (mask > 0.8), composited over ``background``.

    An inverted mask (border set, centre clear) is flipped first; ``grow``
    dilates (erodes when negative) the mask; values under 0.05 become 0. The
    crop is the subject's box grown to ``aspect`` and scaled by
    ``pad_factor``; parts outside the image are zero-padded.
    """
    import torch
    import torch.nn.functional as F

    img = image.permute(2, 0, 1).unsqueeze(0).cpu().float().clamp(0, 1)
    m = mask.unsqueeze(0).unsqueeze(0).cpu().float().clamp(0, 1)
    plane = m[0, 0]
    h, w = plane.shape
    border = torch.cat([plane[0, :], plane[-1, :], plane[:, 0], plane[:, -1]])
    centre = plane[h // 4:h - h // 4, w // 4:w - w // 4]
    if float(border.mean()) > 0.5 and float(centre.mean()) < 0.5:
        m = 1.0 - m
    if grow > 0:
        m = F.max_pool2d(m, kernel_size=2 * grow + 1, stride=1, padding=grow)
    elif grow < 0:
        m = 1.0 - F.max_pool2d(1.0 - m, kernel_size=-2 * grow + 1, stride=1, padding=-grow)
    m = torch.where(m < 0.05, torch.zeros_like(m), m)

    height, width = img.shape[-2:]
    if max(height, width) > max_size:
        scale = max_size / max(height, width)
        new_w, new_h = int(width * scale), int(height * scale)
        img = common_upscale(img, new_w, new_h, "lanczos", "disabled")
        m = common_upscale(m, new_w, new_h, "lanczos", "disabled")
        height, width = new_h, new_w

    alpha = (m[0, 0].clamp(0, 1) * 255.0).to(torch.uint8)
    fg = (alpha > 204).nonzero()
    if fg.numel() == 0:
        inverted = ((255 - alpha) > 204).nonzero()
        if inverted.numel() > 0:
            m, fg = 1.0 - m, inverted
    if fg.numel() > 0:
        y0, x0 = fg.min(dim=0).values.tolist()
        y1, x1 = fg.max(dim=0).values.tolist()
        cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        if bw / max(bh, 1) >= aspect:
            crop_w, crop_h = int(bw * pad_factor), int(bw / aspect * pad_factor)
        else:
            crop_w, crop_h = int(bh * aspect * pad_factor), int(bh * pad_factor)
        half_w, half_h = math.ceil(crop_w / 2), math.ceil(crop_h / 2)
        left, top = int(cx - half_w), int(cy - half_h)
        right, bottom = left + 2 * half_w, top + 2 * half_h
    else:
        left, top, right, bottom = 0, 0, width, height

    pads = (max(0, -left), max(0, right - width), max(0, -top), max(0, bottom - height))
    if any(pads):
        img, m = F.pad(img, pads, value=0.0), F.pad(m, pads, value=0.0)
        left, right, top, bottom = left + pads[0], right + pads[0], top + pads[2], bottom + pads[2]
    img, m = img[..., top:bottom, left:right], m[..., top:bottom, left:right]
    bg = torch.tensor(background, dtype=img.dtype).view(1, 3, 1, 1)
    return (img * m + bg * (1.0 - m)).clamp(0, 1)


class ImageCropToMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageCropToMask",
            display_name="Crop Image to Mask",
            description=("Crops each image around its mask's subject, puts it on a plain background and resizes it: "
                         "the input many image-to-3D models expect."),
            category="image/transform",
            search_aliases=["crop to mask", "mask crop", "crop mask", "mask crop resize", "crop mask resize",
                            "trellis2", "pixal3d"],
            inputs=[
                io.Image.Input("images"),
                io.Mask.Input("masks"),
                io.Int.Input("width", default=1024, min=64, max=4096, step=8),
                io.Int.Input("height", default=1024, min=64, max=4096, step=8),
                io.Float.Input("pad_factor", default=1.0, min=1.0, max=2.0, step=0.01),
                io.Int.Input("grow_mask", default=0, min=-32, max=32, step=1),
                io.Color.Input("background", default="#000000"),
            ],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, images: Any, masks: Any, width: int, height: int, pad_factor: float, grow_mask: int,
                background: str) -> io.NodeOutput:
        import torch

        images = images[..., :3]
        batch = images.shape[0]
        if masks.shape[0] == 1 and batch > 1:
            masks = masks.expand(batch, -1, -1)
        elif masks.shape[0] != batch:
            raise ValueError(f"Mask batch {masks.shape[0]} does not match image batch {batch}")
        if masks.shape[-2:] != images.shape[1:3]:
            masks = common_upscale(masks.unsqueeze(1).float(), images.shape[2], images.shape[1], "bilinear",
                                   "disabled").squeeze(1)
        out = []
        for b in range(batch):
            crop = crop_to_subject(images[b], masks[b], max(width, height), pad_factor, grow_mask,
                                   hex_to_rgb(background), width / height)
            out.append(common_upscale(crop, width, height, "lanczos", "disabled").movedim(-3, -1))
        return io.NodeOutput(torch.cat(out, dim=0))


NODES = [
    NodeDef("ImageCropV2", ImageCropV2, None, "comfy_extras.nodes_images"),
    NodeDef("ImageCropToMask", ImageCropToMask, None, "comfy_extras.nodes_images"),
    NodeDef("PrimitiveBoundingBox", PrimitiveBoundingBox, None, "comfy_extras.nodes_images"),
]
