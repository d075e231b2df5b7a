"""LATENT nodes: empty latents, resizing, batching, compositing and noise masks.

A LATENT is a dict: ``samples`` (raw VAE latent [B, 4, h, w], float32, CPU),
optionally ``noise_mask`` and ``batch_index`` (which item of an original batch
each row is, so the sampler can give it the same noise it had there).
"""

from __future__ import annotations

import math
from typing import Any

from comfy_kernel.nodes.resize import common_upscale

from .common import MAX_RESOLUTION, NodeDef

LATENT_UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
CROP_METHODS = ["disabled", "center"]


class EmptyLatentImage:
    DESCRIPTION = "Creates a batch of empty latents to denoise."
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The empty latent batch.",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}
        return {"required": {
            "width": ("INT", {**size, "tooltip": "Image width in pixels."}),
            "height": ("INT", {**size, "tooltip": "Image height in pixels."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "Latents in the batch."}),
        }}

    def generate(self, width: int, height: int, batch_size: int = 1) -> tuple[dict[str, Any]]:
        import torch

        return ({"samples": torch.zeros([batch_size, 4, height // 8, width // 8])},)


class LatentUpscale:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8}
        return {"required": {"samples": ("LATENT",), "upscale_method": (LATENT_UPSCALE_METHODS,),
                             "width": ("INT", size), "height": ("INT", size), "crop": (CROP_METHODS,)}}

    def upscale(self, samples: dict[str, Any], upscale_method: str, width: int, height: int,
                crop: str) -> tuple[dict[str, Any]]:
        if width == 0 and height == 0:
            return (samples,)
        latent = samples["samples"]
        if width == 0:
            height = max(64, height)
            width = max(64, round(latent.shape[-1] * height / latent.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(latent.shape[-2] * width / latent.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        out = dict(samples)
        out["samples"] = common_upscale(latent, width // 8, height // 8, upscale_method, crop)
        return (out,)


class LatentUpscaleBy:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "upscale_method": (LATENT_UPSCALE_METHODS,),
                             "scale_by": ("FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01})}}

    def upscale(self, samples: dict[str, Any], upscale_method: str, scale_by: float) -> tuple[dict[str, Any]]:
        latent = samples["samples"]
        width, height = round(latent.shape[-1] * scale_by), round(latent.shape[-2] * scale_by)
        out = dict(samples)
        out["samples"] = common_upscale(latent, width, height, upscale_method, "disabled")
        return (out,)


def _masks_for(masks: Any, batch: int) -> Any:
    if masks.shape[0] < batch:
        masks = masks.repeat(math.ceil(batch / masks.shape[0]), 1, 1, 1)[:batch]
    return masks


class LatentFromBatch:
    CATEGORY = "latent/batch"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "frombatch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",),
                             "batch_index": ("INT", {"default": 0, "min": 0, "max": 63}),
                             "length": ("INT", {"default": 1, "min": 1, "max": 64})}}

    def frombatch(self, samples: dict[str, Any], batch_index: int, length: int) -> tuple[dict[str, Any]]:
        latent = samples["samples"]
        start = min(latent.shape[0] - 1, batch_index)
        length = min(latent.shape[0] - start, length)
        out = dict(samples)
        out["samples"] = latent[start:start + length].clone()
        if "noise_mask" in samples:
            masks = samples["noise_mask"]
            if masks.shape[0] == 1:
                out["noise_mask"] = masks.clone()
            else:
                out["noise_mask"] = _masks_for(masks, latent.shape[0])[start:start + length].clone()
        if "batch_index" in samples:
            out["batch_index"] = list(samples["batch_index"][start:start + length])
        else:
            out["batch_index"] = list(range(start, start + length))
        return (out,)


class RepeatLatentBatch:
    CATEGORY = "latent/batch"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "amount": ("INT", {"default": 1, "min": 1, "max": 64})}}

    def repeat(self, samples: dict[str, Any], amount: int) -> tuple[dict[str, Any]]:
        latent = samples["samples"]
        out = dict(samples)
        out["samples"] = latent.repeat((amount, 1, 1, 1))
        if "noise_mask" in samples and samples["noise_mask"].shape[0] > 1:
            out["noise_mask"] = _masks_for(samples["noise_mask"], latent.shape[0]).repeat((amount, 1, 1, 1))
        if "batch_index" in samples:
            idx = list(samples["batch_index"])
            offset = max(idx) - min(idx) + 1
            out["batch_index"] = idx + [x + i * offset for i in range(1, amount) for x in idx]
        return (out,)


class LatentComposite:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        step8 = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}
        return {"required": {"samples_to": ("LATENT",), "samples_from": ("LATENT",), "x": ("INT", step8),
                             "y": ("INT", step8), "feather": ("INT", step8)}}

    def composite(self, samples_to: dict[str, Any], samples_from: dict[str, Any], x: int, y: int,
                  feather: int) -> tuple[dict[str, Any]]:
        import torch

        x, y, feather = x // 8, y // 8, feather // 8
        dest = samples_to["samples"]
        src = samples_from["samples"][:, :, : dest.shape[2] - y, : dest.shape[3] - x]
        result = dest.clone()
        region = (slice(None), slice(None), slice(y, y + src.shape[2]), slice(x, x + src.shape[3]))
        if feather == 0:
            result[region] = src
        else:
            mask = torch.ones_like(src)
            for t in range(feather):
                k = (t + 1) / feather
                if y != 0:
                    mask[:, :, t, :] *= k
                if y + src.shape[2] < dest.shape[2]:
                    mask[:, :, mask.shape[2] - 1 - t, :] *= k
                if x != 0:
                    mask[:, :, :, t] *= k
                if x + src.shape[3] < dest.shape[3]:
                    mask[:, :, :, mask.shape[3] - 1 - t] *= k
            result[region] = src * mask + result[region] * (1.0 - mask)
        out = dict(samples_to)
        out["samples"] = result
        return (out,)


class SetLatentNoiseMask:
    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "set_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "mask": ("MASK",)}}

    def set_mask(self, samples: dict[str, Any], mask: Any) -> tuple[dict[str, Any]]:
        out = dict(samples)
        out["noise_mask"] = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        return (out,)


NODES = [
    NodeDef("EmptyLatentImage", EmptyLatentImage, "Empty Latent Image", "nodes"),
    NodeDef("LatentUpscale", LatentUpscale, "Upscale Latent", "nodes"),
    NodeDef("LatentUpscaleBy", LatentUpscaleBy, "Upscale Latent By", "nodes"),
    NodeDef("LatentFromBatch", LatentFromBatch, "Latent From Batch", "nodes"),
    NodeDef("RepeatLatentBatch", RepeatLatentBatch, "Repeat Latent Batch", "nodes"),
    NodeDef("SetLatentNoiseMask", SetLatentNoiseMask, "Set Latent Noise Mask", "nodes"),
    NodeDef("LatentComposite", LatentComposite, "Latent Composite", "nodes"),
]
