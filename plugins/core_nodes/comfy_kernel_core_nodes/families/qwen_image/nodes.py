"""Qwen-Image-Edit's text encode nodes (ComfyUI's comfy_extras.nodes_qwen).

Both scale the input images for the vision tower, put them inline in the
prompt, and (with a VAE) add their latents as ``reference_latents`` so the
transformer sees them beside the image being generated.
"""

from __future__ import annotations

import math
from typing import Any

from comfy_kernel.nodes import io

from ...nodes.common import NodeDef

MODULE = "comfy_extras.nodes_qwen"

EDIT_PLUS_TEMPLATE = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. Generate a new "
    "image that meets the user's requirements while maintaining consistency with the original input where "
    "appropriate.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n")


def scaled(image: Any, total: int, multiple: int = 1) -> Any:
    """IMAGE resized ("area") to about ``total`` pixels, sides rounded to ``multiple`` (channels first inside)."""
    from comfy_kernel.nodes.resize import common_upscale

    samples = image.movedim(-1, 1)
    scale = math.sqrt(total / (samples.shape[3] * samples.shape[2]))
    width = round(samples.shape[3] * scale / multiple) * multiple
    height = round(samples.shape[2] * scale / multiple) * multiple
    return common_upscale(samples, width, height, "area", "disabled").movedim(1, -1)


def with_reference_latents(conditioning: list, latents: list) -> list:
    """Conditioning entries with ``latents`` appended to their ``reference_latents``."""
    return [[cond, {**opts, "reference_latents": list(opts.get("reference_latents", [])) + list(latents)}]
            for cond, opts in conditioning]


class TextEncodeQwenImageEdit(io.ComfyNode):
    """The prompt with one input image (scaled to about 1 megapixel) for Qwen-Image-Edit."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="TextEncodeQwenImageEdit", category="advanced/conditioning", inputs=[
            io.Clip.Input("clip"), io.String.Input("prompt", multiline=True, dynamic_prompts=True),
            io.Vae.Input("vae", optional=True), io.Image.Input("image", optional=True),
        ], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, clip, prompt, vae=None, image=None) -> io.NodeOutput:
        images, reference = [], None
        if image is not None:
            image = scaled(image, 1024 * 1024)[:, :, :, :3]
            images = [image]
            if vae is not None:
                reference = vae.encode(image)
        conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(prompt, images=images))
        if reference is not None:
            conditioning = with_reference_latents(conditioning, [reference])
        return io.NodeOutput(conditioning)


class TextEncodeQwenImageEditPlus(io.ComfyNode):
    """Up to three input images ("Picture N:" in the prompt; about 384x384 for the vision tower)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="TextEncodeQwenImageEditPlus", category="advanced/conditioning", inputs=[
            io.Clip.Input("clip"), io.String.Input("prompt", multiline=True, dynamic_prompts=True),
            io.Vae.Input("vae", optional=True), io.Image.Input("image1", optional=True),
            io.Image.Input("image2", optional=True), io.Image.Input("image3", optional=True),
        ], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, clip, prompt, vae=None, image1=None, image2=None, image3=None) -> io.NodeOutput:
        references, vision_images, image_prompt = [], [], ""
        for i, image in enumerate((image1, image2, image3)):
            if image is None:
                continue
            vision_images.append(scaled(image, 384 * 384)[:, :, :, :3])
            if vae is not None:
                references.append(vae.encode(scaled(image, 1024 * 1024, 8)[:, :, :, :3]))
            image_prompt += f"Picture {i + 1}: <|vision_start|><|image_pad|><|vision_end|>"
        tokens = clip.tokenize(image_prompt + prompt, images=vision_images, llama_template=EDIT_PLUS_TEMPLATE)
        conditioning = clip.encode_from_tokens_scheduled(tokens)
        if references:
            conditioning = with_reference_latents(conditioning, references)
        return io.NodeOutput(conditioning)


NODES = [
    NodeDef("TextEncodeQwenImageEdit", TextEncodeQwenImageEdit, None, MODULE),
    NodeDef("TextEncodeQwenImageEditPlus", TextEncodeQwenImageEditPlus, None, MODULE),
]
