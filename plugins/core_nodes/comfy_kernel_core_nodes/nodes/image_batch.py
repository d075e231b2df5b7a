"""Batches of IMAGE (and MASK/LATENT) items: repeat, slice, rebatch, and the grow-as-you-link batch nodes."""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io
from comfy_kernel.nodes.resize import common_upscale

from .common import NodeDef


class RepeatImageBatch:
    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "amount": ("INT", {"default": 1, "min": 1, "max": 4096})}}

    def repeat(self, image: Any, amount: int) -> tuple[Any]:
        return (image.repeat((amount, 1, 1, 1)),)


class ImageFromBatch:
    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "frombatch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "batch_index": ("INT", {"default": 0, "min": 0, "max": 4095}),
                             "length": ("INT", {"default": 1, "min": 1, "max": 4096})}}

    def frombatch(self, image: Any, batch_index: int, length: int) -> tuple[Any]:
        # An index past the end selects the last image; the length is cut to what is there.
        batch_index = min(image.shape[0] - 1, batch_index)
        length = min(image.shape[0] - batch_index, length)
        return (image[batch_index:batch_index + length].clone(),)


class RebatchImages(io.ComfyNode):
    """Regroups a list of image batches into batches of ``batch_size`` (the last one may be smaller)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RebatchImages",
            display_name="Rebatch Images",
            category="image/batch",
            is_input_list=True,
            inputs=[io.Image.Input("images"), io.Int.Input("batch_size", default=1, min=1, max=4096)],
            outputs=[io.Image.Output(is_output_list=True)],
        )

    @classmethod
    def execute(cls, images: list[Any], batch_size: list[int]) -> io.NodeOutput:
        import torch

        size = batch_size[0]
        singles = [img[i:i + 1] for img in images for i in range(img.shape[0])]
        return io.NodeOutput([torch.cat(singles[i:i + size], dim=0) for i in range(0, len(singles), size)])


def batch_images(images: list[Any]) -> Any:
    """One batch of every image, alpha-padded to the most channels and resized to the first image's size."""
    import torch
    import torch.nn.functional as F

    if not images:
        return None
    channels = max(image.shape[-1] for image in images)
    padded = [F.pad(image, (0, 1), mode="constant", value=1.0) if image.shape[-1] < channels else image
              for image in images]
    first = padded[0].shape
    resized = [img if img.shape[1:] == first[1:] else
               common_upscale(img.movedim(-1, 1), first[2], first[1], "bilinear", "center").movedim(1, -1)
               for img in padded]
    return torch.cat(resized, dim=0)


def batch_masks(masks: list[Any]) -> Any:
    """One batch of every mask, each resized (bilinear, centre crop) to the first mask's size."""
    import torch

    if not masks:
        return None
    first = masks[0].shape
    resized = [m if m.shape[1:] == first[1:] else
               common_upscale(m.unsqueeze(1), first[2], first[1], "bilinear", "center").squeeze(1) for m in masks]
    return torch.cat(resized, dim=0)


def batch_latents(latents: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One LATENT of every latent's samples (resized to the first's shape), keeping each item's batch_index."""
    import torch

    if not latents:
        return None
    out = latents[0].copy()
    first = latents[0]["samples"]
    tensors, indices = [], []
    for latent in latents:
        samples = latent["samples"]
        if samples.shape[1:] != first.shape[1:]:
            samples = common_upscale(samples, first.shape[-1], first.shape[-2], "bilinear", "center")
        tensors.append(samples)
        indices.extend(latent.get("batch_index", list(range(latent["samples"].shape[0]))))
    out["samples"] = torch.cat(tensors, dim=0)
    out["batch_index"] = indices
    return out


def _autogrow(kind: type, name: str) -> Any:
    return io.Autogrow.TemplatePrefix(kind.Input(name), prefix=name, min=1, max=50)


class BatchImagesNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BatchImagesNode",
            display_name="Batch Images",
            category="image/batch",
            search_aliases=["batch", "image batch", "batch images", "combine images", "merge images", "stack images"],
            inputs=[io.Autogrow.Input("images", template=_autogrow(io.Image, "image"))],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, images: dict[str, Any]) -> io.NodeOutput:
        return io.NodeOutput(batch_images([v for v in images.values() if v is not None]))


class BatchMasksNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BatchMasksNode",
            display_name="Batch Masks",
            category="image/mask",
            search_aliases=["combine masks", "stack masks", "merge masks"],
            inputs=[io.Autogrow.Input("masks", template=_autogrow(io.Mask, "mask"))],
            outputs=[io.Mask.Output()],
        )

    @classmethod
    def execute(cls, masks: dict[str, Any]) -> io.NodeOutput:
        return io.NodeOutput(batch_masks([v for v in masks.values() if v is not None]))


class BatchLatentsNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BatchLatentsNode",
            display_name="Batch Latents",
            category="model/latent/batch",
            search_aliases=["combine latents", "stack latents", "merge latents"],
            inputs=[io.Autogrow.Input("latents", template=_autogrow(io.Latent, "latent"))],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, latents: dict[str, Any]) -> io.NodeOutput:
        return io.NodeOutput(batch_latents([v for v in latents.values() if v is not None]))


NODES = [
    NodeDef("RepeatImageBatch", RepeatImageBatch, "RepeatImageBatch", "comfy_extras.nodes_images"),
    NodeDef("ImageFromBatch", ImageFromBatch, "ImageFromBatch", "comfy_extras.nodes_images"),
    NodeDef("RebatchImages", RebatchImages, None, "comfy_extras.nodes_rebatch"),
    NodeDef("BatchImagesNode", BatchImagesNode, None, "comfy_extras.nodes_post_processing"),
    NodeDef("BatchMasksNode", BatchMasksNode, None, "comfy_extras.nodes_post_processing"),
    NodeDef("BatchLatentsNode", BatchLatentsNode, None, "comfy_extras.nodes_post_processing"),
]
