"""The SDXL text encode nodes (ComfyUI's comfy_extras.nodes_clip_sdxl)."""

from __future__ import annotations

from comfy_kernel.nodes import io

from ...nodes.common import MAX_RESOLUTION, NodeDef

MODULE = "comfy_extras.nodes_clip_sdxl"


def _size(id: str, default: int = 1024) -> io.Input:
    return io.Int.Input(id, default=default, min=0, max=MAX_RESOLUTION)


class CLIPTextEncodeSDXL(io.ComfyNode):
    """Separate prompts for SDXL's two encoders, plus the size micro-conditioning."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="CLIPTextEncodeSDXL", category="advanced/conditioning", inputs=[
            io.Clip.Input("clip"), _size("width"), _size("height"), _size("crop_w", 0), _size("crop_h", 0),
            _size("target_width"), _size("target_height"),
            io.String.Input("text_g", multiline=True, dynamic_prompts=True),
            io.String.Input("text_l", multiline=True, dynamic_prompts=True),
        ], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, clip, width, height, crop_w, crop_h, target_width, target_height, text_g,
                text_l) -> io.NodeOutput:
        tokens = clip.tokenize(text_g)
        tokens["l"] = clip.tokenize(text_l)["l"]
        if len(tokens["l"]) != len(tokens["g"]):
            empty = clip.tokenize("")
            while len(tokens["l"]) < len(tokens["g"]):
                tokens["l"] += empty["l"]
            while len(tokens["l"]) > len(tokens["g"]):
                tokens["g"] += empty["g"]
        sizes = {"width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
                 "target_width": target_width, "target_height": target_height}
        return io.NodeOutput(clip.encode_from_tokens_scheduled(tokens, add_dict=sizes))


class CLIPTextEncodeSDXLRefiner(io.ComfyNode):
    """The SDXL refiner's prompt with its aesthetic score and size."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="CLIPTextEncodeSDXLRefiner", category="advanced/conditioning", inputs=[
            io.Float.Input("ascore", default=6.0, min=0.0, max=1000.0, step=0.01), _size("width"), _size("height"),
            io.String.Input("text", multiline=True, dynamic_prompts=True), io.Clip.Input("clip"),
        ], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, ascore, width, height, text, clip) -> io.NodeOutput:
        tokens = clip.tokenize(text)
        return io.NodeOutput(clip.encode_from_tokens_scheduled(
            tokens, add_dict={"aesthetic_score": ascore, "width": width, "height": height}))


NODES = [
    NodeDef("CLIPTextEncodeSDXL", CLIPTextEncodeSDXL, None, MODULE),
    NodeDef("CLIPTextEncodeSDXLRefiner", CLIPTextEncodeSDXLRefiner, None, MODULE),
]
