"""T5TokenizerOptions (ComfyUI's comfy_extras.nodes_cond): padding options for every T5 tokenizer of a CLIP."""

from __future__ import annotations

from comfy_kernel.nodes import io

from .common import NodeDef

#: The tokenizer keys of ComfyUI's T5 variants; a tokenizer reads ``<key>_min_padding`` / ``<key>_min_length``.
T5_KEYS = ("t5xxl", "pile_t5xl", "t5base", "mt5xl", "umt5xxl")


class T5TokenizerOptions(io.ComfyNode):
    """A copy of the CLIP whose T5 tokenizers pad by ``min_padding`` tokens and to ``min_length`` (0: no minimum)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="T5TokenizerOptions", category="_for_testing/conditioning", inputs=[
            io.Clip.Input("clip"),
            io.Int.Input("min_padding", default=0, min=0, max=10000, step=1),
            io.Int.Input("min_length", default=0, min=0, max=10000, step=1),
        ], outputs=[io.Clip.Output()], is_experimental=True)

    @classmethod
    def execute(cls, clip, min_padding, min_length) -> io.NodeOutput:
        clip = clip.clone()
        for key in T5_KEYS:
            clip.set_tokenizer_option(f"{key}_min_padding", min_padding)
            clip.set_tokenizer_option(f"{key}_min_length", min_length)
        return io.NodeOutput(clip)


NODES = [NodeDef("T5TokenizerOptions", T5TokenizerOptions, None, "comfy_extras.nodes_cond")]
