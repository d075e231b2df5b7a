"""IMAGE and MASK nodes: loading inputs (files, outputs, webcam, painter), resizing, inverting, batching, padding.

IMAGE is float32 [B, H, W, C] in [0, 1] on the CPU; MASK is float32 [B, H, W]
where 1 marks the region to change (LoadImage's mask is 1 - alpha).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from comfy_kernel.nodes import io

from . import context
from .common import MAX_RESOLUTION, NodeDef
from .image_ops import hex_to_rgb
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
    """The file ``name`` names, if it exists and the prompt's owner may open it (else None)."""
    try:
        path = context.annotated_input_path(name)
    except (ValueError, RuntimeError):
        return None
    return path if os.path.isfile(path) else None


def _open_image(path: str) -> Any:
    from PIL import Image

    return Image.open(path)


def _unreadable(name: str, exc: Exception) -> ValueError:
    """A decoding failure named by the file's given name: PIL's own message carries the server path."""
    kind = "not an image" if type(exc).__name__ == "UnidentifiedImageError" else "damaged or unsupported image"
    return ValueError(f"Invalid image file: {name} ({kind})")


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
        try:
            return load_image_file(path)
        except (OSError, ValueError, SyntaxError) as exc:
            raise _unreadable(image, exc) from None

    @classmethod
    def IS_CHANGED(cls, image: str, **_: Any) -> str:
        path = _input_path(image)
        return _file_hash(path) if path else ""

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        return True if _input_path(image) else f"Invalid image file: {image}"


class LoadImageOutput(LoadImage):
    """LoadImage for files of the output folder (``name [output]``); the frontend lists them itself."""

    DESCRIPTION = ("Loads an image from the output folder. The refresh button reloads the list and selects "
                   "the newest image, so the result of the last run can be fed back in.")
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("COMBO", {
            "image_upload": True,
            "image_folder": "output",
            "remote": {"route": "/internal/files/output", "refresh_button": True, "control_after_refresh": "first"},
        })}}


class WebcamCapture(LoadImage):
    """A frame the frontend captured from the webcam and uploaded; width/height only size the capture there."""

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "load_capture"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return {"required": {"image": ("WEBCAM", {}), "width": ("INT", size), "height": ("INT", size),
                             "capture_on_queue": ("BOOLEAN", {"default": True})}}

    def load_capture(self, image: str, **_: Any) -> tuple[Any]:
        return (self.load_image(image)[0],)

    @classmethod
    def IS_CHANGED(cls, image: str, **_: Any) -> str:
        return LoadImage.IS_CHANGED(image)


class Painter(io.ComfyNode):
    """A canvas painted in the frontend (uploaded as an RGBA PNG), over an image or a solid background."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        hidden_size = {"default": 512, "min": 64, "max": 4096, "step": 64, "socketless": True,
                       "extra_dict": {"hidden": True}}
        return io.Schema(
            node_id="Painter",
            display_name="Painter",
            category="image",
            inputs=[
                io.Image.Input("image", optional=True, tooltip="Image to paint over (the first of a batch)."),
                io.String.Input("mask", default="", socketless=True,
                                extra_dict={"widgetType": "PAINTER", "image_upload": True}),
                io.Int.Input("width", **hidden_size),
                io.Int.Input("height", **hidden_size),
                io.Color.Input("bg_color", default="#000000"),
            ],
            outputs=[io.Image.Output("IMAGE", display_name="IMAGE"), io.Mask.Output("MASK", display_name="MASK")],
        )

    @classmethod
    def execute(cls, mask: str, width: int, height: int, bg_color: str = "#000000", image: Any = None) -> io.NodeOutput:
        import numpy as np
        import torch
        from PIL import Image

        from .save import PreviewImage

        if image is not None:
            base = image[:1]
            h, w = base.shape[1], base.shape[2]
        else:
            h, w = height, width
            base = torch.zeros((1, h, w, 3), dtype=torch.float32)
            base[0, :, :] = torch.tensor(hex_to_rgb(bg_color))
        if mask and mask.strip():
            path = _input_path(mask)
            if path is None:
                raise FileNotFoundError(f"Invalid painter file: {mask}")
            painted = _open_image(path).convert("RGBA")
            if painted.size != (w, h):
                painted = painted.resize((w, h), Image.LANCZOS)
            rgba = np.array(painted).astype(np.float32) / 255.0
            alpha = rgba[:, :, 3:4]
            composed = rgba[:, :, :3] * alpha + base[0].cpu().numpy() * (1.0 - alpha)
            out, out_mask = torch.from_numpy(composed).unsqueeze(0), torch.from_numpy(rgba[:, :, 3]).unsqueeze(0)
        else:
            out, out_mask = base, torch.zeros((1, h, w), dtype=torch.float32)
        return io.NodeOutput(out, out_mask, ui=PreviewImage().save_images(out)["ui"])

    @classmethod
    def fingerprint_inputs(cls, mask: str = "", **_: Any) -> str:
        path = _input_path(mask) if mask and mask.strip() else None
        return _file_hash(path) if path else ""


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
        try:
            frame = ImageOps.exif_transpose(_open_image(path))
            if frame.getbands() != ("R", "G", "B", "A"):
                frame = _as_16bit_scaled(frame).convert("RGBA")
        except (OSError, ValueError, SyntaxError) as exc:
            raise _unreadable(image, exc) from None
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
    NodeDef("LoadImageOutput", LoadImageOutput, "Load Image (from Outputs)", "nodes"),
    NodeDef("LoadImageMask", LoadImageMask, "Load Image (as Mask)", "nodes"),
    NodeDef("WebcamCapture", WebcamCapture, "Webcam Capture", "comfy_extras.nodes_webcam"),
    NodeDef("Painter", Painter, None, "comfy_extras.nodes_painter"),
    NodeDef("ImageScale", ImageScale, "Upscale Image", "nodes"),
    NodeDef("ImageScaleBy", ImageScaleBy, "Upscale Image By", "nodes"),
    NodeDef("ImageInvert", ImageInvert, "Invert Image", "nodes"),
    NodeDef("ImageBatch", ImageBatch, "Batch Images", "nodes"),
    NodeDef("ImagePadForOutpaint", ImagePadForOutpaint, "Pad Image for Outpainting", "nodes"),
    NodeDef("EmptyImage", EmptyImage, "EmptyImage", "nodes"),
]
