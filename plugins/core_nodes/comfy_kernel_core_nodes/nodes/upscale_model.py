"""UpscaleModelLoader and ImageUpscaleWithModel (ComfyUI's ``comfy_extras.nodes_upscale_model``).

Any single-image architecture spandrel detects loads (ESRGAN and Real-ESRGAN,
SwinIR, HAT, DAT, Compact, SPAN, ...), from .safetensors or, through
``torch.load(weights_only=True)``, .pth/.pt/.ckpt files in
``models/upscale_models``. See :mod:`..upscale` for memory handling.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from . import context
from .common import NodeDef

MODULE = "comfy_extras.nodes_upscale_model"


class UpscaleModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UpscaleModelLoader", display_name="Load Upscale Model", category="loaders",
            inputs=[io.Combo.Input("model_name", options=context.list_files("upscale_models"))],
            outputs=[io.UpscaleModel.Output()])

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        from ..upscale.model import UpscaleModel

        return io.NodeOutput(UpscaleModel.open(context.full_path("upscale_models", model_name)))


class ImageUpscaleWithModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageUpscaleWithModel", display_name="Upscale Image (using Model)", category="image/upscaling",
            inputs=[io.UpscaleModel.Input("upscale_model"), io.Image.Input("image")],
            outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, upscale_model: Any, image: Any) -> io.NodeOutput:
        from ..upscale.model import UpscaleModel, upscale_image

        if not isinstance(upscale_model, UpscaleModel) and not hasattr(upscale_model, "scale"):
            raise TypeError(f"ImageUpscaleWithModel needs an UPSCALE_MODEL, got {type(upscale_model).__name__}")
        return io.NodeOutput(upscale_image(upscale_model, image))


NODES = [
    NodeDef("UpscaleModelLoader", UpscaleModelLoader, "Load Upscale Model", MODULE),
    NodeDef("ImageUpscaleWithModel", ImageUpscaleWithModel, "Upscale Image (using Model)", MODULE),
]
