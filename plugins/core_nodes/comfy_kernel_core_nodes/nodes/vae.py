"""VAE nodes: decode, encode, their tiled variants and the inpainting encoder.

The VAE object (model/vae.py) pins its network on the worker's device while
it runs; the IMAGE / LATENT values that leave the node live on the CPU in
float32, as ComfyUI's do.
"""

from __future__ import annotations

import math
from typing import Any

from .common import NodeDef


class VAEDecode:
    DESCRIPTION = "Decodes latents back into images."
    CATEGORY = "latent"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT", {"tooltip": "The latent to decode."}),
                             "vae": ("VAE", {"tooltip": "The VAE to decode with."})}}

    def decode(self, vae: Any, samples: dict[str, Any]) -> tuple[Any]:
        images = vae.decode(samples["samples"])
        if images.ndim == 5:  # video VAEs: frames become batch items
            images = images.reshape(-1, *images.shape[-3:])
        return (images,)


class VAEDecodeTiled:
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": ("LATENT",), "vae": ("VAE",),
            "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 32}),
            "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32}),
            "temporal_size": ("INT", {"default": 64, "min": 8, "max": 4096, "step": 4,
                                      "tooltip": "Only used by video VAEs: frames decoded at a time."}),
            "temporal_overlap": ("INT", {"default": 8, "min": 4, "max": 4096, "step": 4,
                                         "tooltip": "Only used by video VAEs: frames shared between chunks."}),
        }}

    def decode(self, vae: Any, samples: dict[str, Any], tile_size: int, overlap: int = 64,
               temporal_size: int = 64, temporal_overlap: int = 8) -> tuple[Any]:
        if tile_size < overlap * 4:
            overlap = tile_size // 4
        if temporal_size < temporal_overlap * 2:
            temporal_overlap = temporal_overlap // 2
        temporal = vae.temporal_compression_decode()
        if temporal is not None:  # video VAEs: frames -> latent frames
            temporal_size = max(2, temporal_size // temporal)
            temporal_overlap = max(1, min(temporal_size // 2, temporal_overlap // temporal))
        compression = vae.spacial_compression_decode()
        images = vae.decode_tiled(samples["samples"], tile_x=tile_size // compression,
                                  tile_y=tile_size // compression, overlap=overlap // compression,
                                  tile_t=temporal_size, overlap_t=temporal_overlap)
        if images.ndim == 5:
            images = images.reshape(-1, *images.shape[-3:])
        return (images,)


class VAEEncode:
    DESCRIPTION = "Encodes images into latents."
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}

    def encode(self, vae: Any, pixels: Any) -> tuple[dict[str, Any]]:
        return ({"samples": vae.encode(pixels[:, :, :, :3])},)


class VAEEncodeTiled:
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "pixels": ("IMAGE",), "vae": ("VAE",),
            "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64}),
            "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32}),
            "temporal_size": ("INT", {"default": 64, "min": 8, "max": 4096, "step": 4,
                                      "tooltip": "Only used by video VAEs: frames encoded at a time."}),
            "temporal_overlap": ("INT", {"default": 8, "min": 4, "max": 4096, "step": 4,
                                         "tooltip": "Only used by video VAEs: frames shared between chunks."}),
        }}

    def encode(self, vae: Any, pixels: Any, tile_size: int, overlap: int = 64, temporal_size: int = 64,
               temporal_overlap: int = 8) -> tuple[dict[str, Any]]:
        overlap = min(overlap, tile_size // 4)
        latent = vae.encode_tiled(pixels[:, :, :, :3], tile_x=tile_size, tile_y=tile_size, overlap=overlap,
                                  tile_t=temporal_size, overlap_t=temporal_overlap)
        return ({"samples": latent},)


class VAEEncodeForInpaint:
    """Encode with the masked region set to grey, and a (grown) noise mask for the sampler."""

    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",), "mask": ("MASK",),
                             "grow_mask_by": ("INT", {"default": 6, "min": 0, "max": 64, "step": 1})}}

    def encode(self, vae: Any, pixels: Any, mask: Any, grow_mask_by: int = 6) -> tuple[dict[str, Any]]:
        import torch
        import torch.nn.functional as F

        down = vae.spacial_compression_encode()
        h, w = (pixels.shape[1] // down) * down, (pixels.shape[2] // down) * down
        mask = F.interpolate(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(),
                             size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")
        pixels = pixels.clone()
        if (pixels.shape[1], pixels.shape[2]) != (h, w):
            top, left = (pixels.shape[1] % down) // 2, (pixels.shape[2] % down) // 2
            pixels = pixels[:, top:top + h, left:left + w, :]
            mask = mask[:, :, top:top + h, left:left + w]
        if grow_mask_by == 0:
            grown = mask
        else:
            kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by))
            padding = math.ceil((grow_mask_by - 1) / 2)
            grown = torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)
        keep = (1.0 - mask.round()).squeeze(1)
        pixels[..., :3] = (pixels[..., :3] - 0.5) * keep.unsqueeze(-1) + 0.5
        latent = vae.encode(pixels)
        return ({"samples": latent, "noise_mask": grown[:, :, :h, :w].round()},)


NODES = [
    NodeDef("VAEDecode", VAEDecode, "VAE Decode", "nodes"),
    NodeDef("VAEEncode", VAEEncode, "VAE Encode", "nodes"),
    NodeDef("VAEEncodeForInpaint", VAEEncodeForInpaint, "VAE Encode (for Inpainting)", "nodes"),
    NodeDef("VAEDecodeTiled", VAEDecodeTiled, "VAE Decode (Tiled)", "nodes"),
    NodeDef("VAEEncodeTiled", VAEEncodeTiled, "VAE Encode (Tiled)", "nodes"),
]
