"""SD3's nodes (ComfyUI's comfy_extras.nodes_sd3): the latent (shared with Flux.1, Chroma and other
16-channel models), TripleCLIPLoader, CLIPTextEncodeSD3, SkipLayerGuidanceSD3 and ControlNetApplySD3."""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from ...nodes import context
from ...nodes.common import MAX_RESOLUTION, NodeDef
from ...nodes.controlnet import PERCENT_END, PERCENT_START, STRENGTH, ControlNetApplyAdvanced

MODULE = "comfy_extras.nodes_sd3"


class EmptySD3LatentImage(io.ComfyNode):
    """An all-zero 16-channel latent at 1/8 of the image size."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="EmptySD3LatentImage", category="latent/sd3", inputs=[
            io.Int.Input("width", default=1024, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("height", default=1024, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("batch_size", default=1, min=1, max=4096),
        ], outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, width, height, batch_size=1) -> io.NodeOutput:
        import torch

        return io.NodeOutput({"samples": torch.zeros([batch_size, 16, height // 8, width // 8])})


class TripleCLIPLoader(io.ComfyNode):
    """CLIP-L, CLIP-G and T5-XXL files (any order) as SD3's text encoder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        files = context.list_files("text_encoders")
        return io.Schema(node_id="TripleCLIPLoader", category="advanced/loaders",
                         description="[Recipes]\n\nsd3: clip-l, clip-g, t5",
                         inputs=[io.Combo.Input(f"clip_name{i}", options=files) for i in (1, 2, 3)],
                         outputs=[io.Clip.Output()])

    @classmethod
    def execute(cls, clip_name1: str, clip_name2: str, clip_name3: str) -> io.NodeOutput:
        from ...model.loading import load_clip

        paths = [context.full_path("text_encoders", name) for name in (clip_name1, clip_name2, clip_name3)]
        return io.NodeOutput(load_clip(paths, "sd3", embedding_directory=context.embedding_directory))


class CLIPTextEncodeSD3(io.ComfyNode):
    """One prompt per encoder; ``empty_padding: none`` leaves an empty prompt's encoder out entirely."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="CLIPTextEncodeSD3", category="advanced/conditioning", inputs=[
            io.Clip.Input("clip"),
            io.String.Input("clip_l", multiline=True, dynamic_prompts=True),
            io.String.Input("clip_g", multiline=True, dynamic_prompts=True),
            io.String.Input("t5xxl", multiline=True, dynamic_prompts=True),
            io.Combo.Input("empty_padding", options=["none", "empty_prompt"]),
        ], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, clip: Any, clip_l: str, clip_g: str, t5xxl: str, empty_padding: str) -> io.NodeOutput:
        no_padding = empty_padding == "none"
        tokens = clip.tokenize(clip_g)
        if len(clip_g) == 0 and no_padding:
            tokens["g"] = []
        if len(clip_l) == 0 and no_padding:
            tokens["l"] = []
        else:
            tokens["l"] = clip.tokenize(clip_l)["l"]
        if len(t5xxl) == 0 and no_padding:
            tokens["t5xxl"] = []
        else:
            tokens["t5xxl"] = clip.tokenize(t5xxl)["t5xxl"]
        if len(tokens["l"]) != len(tokens["g"]):  # CLIP-L and CLIP-G states are concatenated: same chunk count
            empty = clip.tokenize("")
            while len(tokens["l"]) < len(tokens["g"]):
                tokens["l"] += empty["l"]
            while len(tokens["l"]) > len(tokens["g"]):
                tokens["g"] += empty["g"]
        return io.NodeOutput(clip.encode_from_tokens_scheduled(tokens))


class SkipLayerGuidanceSD3(io.ComfyNode):
    """SkipLayerGuidanceDiT on the joint blocks (SD3.5 Medium's recommended "7, 8, 9")."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SkipLayerGuidanceSD3", category="advanced/guidance", is_experimental=True,
            description="Generic version of SkipLayerGuidance node that can be used on every DiT model.",
            inputs=[io.Model.Input("model"),
                    io.String.Input("layers", default="7, 8, 9", multiline=False),
                    io.Float.Input("scale", default=3.0, min=0.0, max=10.0, step=0.1),
                    io.Float.Input("start_percent", default=0.01, min=0.0, max=1.0, step=0.001),
                    io.Float.Input("end_percent", default=0.15, min=0.0, max=1.0, step=0.001)],
            outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, layers: str, scale: float, start_percent: float,
                end_percent: float) -> io.NodeOutput:
        from ...nodes.guidance import SkipLayerGuidanceDiT

        return SkipLayerGuidanceDiT.execute(model=model, scale=scale, start_percent=start_percent,
                                            end_percent=end_percent, double_layers=layers)


class ControlNetApplySD3(ControlNetApplyAdvanced):
    """ControlNetApplyAdvanced with the VAE required (the SD3.5 ControlNets encode their hint with it)."""

    DEPRECATED = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "control_net": ("CONTROL_NET",), "vae": ("VAE",), "image": ("IMAGE",),
                             "strength": STRENGTH, "start_percent": PERCENT_START, "end_percent": PERCENT_END}}


NODES = [
    NodeDef("EmptySD3LatentImage", EmptySD3LatentImage, None, MODULE),
    NodeDef("TripleCLIPLoader", TripleCLIPLoader, None, MODULE),
    NodeDef("CLIPTextEncodeSD3", CLIPTextEncodeSD3, None, MODULE),
    NodeDef("SkipLayerGuidanceSD3", SkipLayerGuidanceSD3, None, MODULE),
    NodeDef("ControlNetApplySD3", ControlNetApplySD3, "Apply Controlnet with VAE", MODULE),
]
