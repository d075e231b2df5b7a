"""HiDream's nodes (ComfyUI's comfy_extras.nodes_hidream): the four-file text encoder loader and its prompt node."""

from __future__ import annotations

from comfy_kernel.nodes import io

from ...nodes import context
from ...nodes.common import NodeDef

MODULE = "comfy_extras.nodes_hidream"


class QuadrupleCLIPLoader(io.ComfyNode):
    """CLIP-L, CLIP-G, T5-XXL and Llama 3.1 files (any order) as HiDream's text encoder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        files = context.list_files("text_encoders")
        return io.Schema(node_id="QuadrupleCLIPLoader", category="advanced/loaders",
                         description="[Recipes]\n\nhidream: long clip-l, long clip-g, t5xxl, llama_8b_3.1_instruct",
                         inputs=[io.Combo.Input(f"clip_name{i}", options=files) for i in (1, 2, 3, 4)],
                         outputs=[io.Clip.Output()])

    @classmethod
    def execute(cls, clip_name1: str, clip_name2: str, clip_name3: str, clip_name4: str) -> io.NodeOutput:
        from ...model.loading import load_clip

        names = (clip_name1, clip_name2, clip_name3, clip_name4)
        paths = [context.full_path("text_encoders", name) for name in names]
        return io.NodeOutput(load_clip(paths, "hidream", embedding_directory=context.embedding_directory))


class CLIPTextEncodeHiDream(io.ComfyNode):
    """A separate prompt for each of HiDream's four text encoders."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="CLIPTextEncodeHiDream", category="advanced/conditioning", inputs=[
            io.Clip.Input("clip"),
            io.String.Input("clip_l", multiline=True, dynamic_prompts=True),
            io.String.Input("clip_g", multiline=True, dynamic_prompts=True),
            io.String.Input("t5xxl", multiline=True, dynamic_prompts=True),
            io.String.Input("llama", multiline=True, dynamic_prompts=True),
        ], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, clip, clip_l: str, clip_g: str, t5xxl: str, llama: str) -> io.NodeOutput:
        tokens = clip.tokenize(clip_g)
        tokens["l"] = clip.tokenize(clip_l)["l"]
        tokens["t5xxl"] = clip.tokenize(t5xxl)["t5xxl"]
        tokens["llama"] = clip.tokenize(llama)["llama"]
        return io.NodeOutput(clip.encode_from_tokens_scheduled(tokens))


NODES = [
    NodeDef("QuadrupleCLIPLoader", QuadrupleCLIPLoader, None, MODULE),
    NodeDef("CLIPTextEncodeHiDream", CLIPTextEncodeHiDream, None, MODULE),
]
