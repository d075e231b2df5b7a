"""Conditioning for image-conditioned models: inpainting, InstructPix2Pix and the x4 upscaler.

These nodes only attach the encoded image (and mask) to the conditioning; the
model turns them into its extra input channels (``BaseModel.concat_cond``):
an inpainting model reads ``concat_latent_image`` and ``concat_mask``, an
InstructPix2Pix model ``concat_latent_image``, the x4 upscaler ``concat_image``.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from .clip_vision import set_values
from .common import NodeDef


def _crop8(pixels: Any) -> Any:
    """IMAGE cut to multiples of 8 (centred), as the VAE needs."""
    x, y = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
    if pixels.shape[1] != x or pixels.shape[2] != y:
        x_offset, y_offset = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
        pixels = pixels[:, x_offset:x + x_offset, y_offset:y + y_offset, :]
    return pixels


class InpaintModelConditioning:
    CATEGORY = "conditioning/inpaint"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "vae": ("VAE",),
                             "pixels": ("IMAGE",), "mask": ("MASK",),
                             "noise_mask": ("BOOLEAN", {"default": True, "tooltip": (
                                 "Also set the mask as the latent's noise mask, so only the masked area is "
                                 "sampled.")})}}

    def encode(self, positive: list, negative: list, pixels: Any, vae: Any, mask: Any,
               noise_mask: bool = True) -> tuple[list, list, dict]:
        import torch

        x, y = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
        mask = torch.nn.functional.interpolate(mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])),
                                               size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")
        orig_pixels = pixels
        pixels = orig_pixels.clone()
        if pixels.shape[1] != x or pixels.shape[2] != y:
            x_offset, y_offset = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
            pixels = pixels[:, x_offset:x + x_offset, y_offset:y + y_offset, :]
            mask = mask[:, :, x_offset:x + x_offset, y_offset:y + y_offset]
        keep = (1.0 - mask.round()).squeeze(1)
        for i in range(3):
            pixels[:, :, :, i] -= 0.5
            pixels[:, :, :, i] *= keep
            pixels[:, :, :, i] += 0.5
        concat_latent = vae.encode(pixels)
        latent = {"samples": vae.encode(orig_pixels)}
        if noise_mask:
            latent["noise_mask"] = mask
        values = {"concat_latent_image": concat_latent, "concat_mask": mask}
        return (set_values(positive, values), set_values(negative, values), latent)


class InstructPixToPixConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="InstructPixToPixConditioning", category="conditioning/instructpix2pix", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            io.Image.Input("pixels"),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, positive, negative, pixels, vae) -> io.NodeOutput:
        import torch

        concat_latent = vae.encode(_crop8(pixels))
        values = {"concat_latent_image": concat_latent}
        return io.NodeOutput(set_values(positive, values), set_values(negative, values),
                             {"samples": torch.zeros_like(concat_latent)})


class SD_4XUpscale_Conditioning(io.ComfyNode):  # noqa: N801 - ComfyUI's name
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="SD_4XUpscale_Conditioning", category="conditioning/upscale_diffusion", inputs=[
            io.Image.Input("images"), io.Conditioning.Input("positive"), io.Conditioning.Input("negative"),
            io.Float.Input("scale_ratio", default=4.0, min=0.0, max=10.0, step=0.01),
            io.Float.Input("noise_augmentation", default=0.0, min=0.0, max=1.0, step=0.001),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, images, positive, negative, scale_ratio, noise_augmentation) -> io.NodeOutput:
        import torch

        from comfy_kernel.nodes.resize import common_upscale

        width = max(1, round(images.shape[-2] * scale_ratio))
        height = max(1, round(images.shape[-3] * scale_ratio))
        pixels = common_upscale((images.movedim(-1, 1) * 2.0) - 1.0, width // 4, height // 4, "bilinear", "center")
        values = {"concat_image": pixels, "noise_augmentation": noise_augmentation}
        latent = torch.zeros([images.shape[0], 4, height // 4, width // 4])
        return io.NodeOutput(set_values(positive, values), set_values(negative, values), {"samples": latent})


NODES = [
    NodeDef("InpaintModelConditioning", InpaintModelConditioning, "InpaintModelConditioning", "nodes"),
    NodeDef("InstructPixToPixConditioning", InstructPixToPixConditioning, None, "comfy_extras.nodes_ip2p"),
    NodeDef("SD_4XUpscale_Conditioning", SD_4XUpscale_Conditioning, None, "comfy_extras.nodes_sdupscale"),
]
