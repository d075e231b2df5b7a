"""LTX-2's text nodes: the Gemma 3 + checkpoint text encoder loader and the prompt enhancer.

``LTXAVTextEncoderLoader`` (ComfyUI's comfy_extras.nodes_lt_audio) loads
Gemma 3 12B from ``text_encoders`` and the text projection (and, for LTX-2,
the text connectors) from the LTX-2 checkpoint in ``checkpoints``
(:func:`.text.ltxav_clip`). ``device`` is accepted; the text encoder loads
where the model manager puts text encoders, as with the other CLIP loaders
here.

``TextGenerateLTX2Prompt`` (comfy_extras.nodes_textgen) is TextGenerate with
prompt-enhancement instructions as Gemma 3's (LTX-2.5: Gemma 4's) system turn (``prompts/``: the
rules Lightricks gives for LTX-2 prompts, written here in our own words; the
image-to-video ones when an image is connected, unless ``system_prompt``
replaces them) and the user's text as "User Raw Input Prompt: ...". An empty
answer gives back the prompt itself, so the video is still conditioned on
something.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from comfy_kernel.nodes import io

from ...nodes import context
from ...nodes.common import NodeDef
from ...nodes.textgen import MODULE as TEXTGEN_MODULE
from ...nodes.textgen import TextGenerate

MODULE = "comfy_extras.nodes_lt_audio"
PROMPTS = Path(__file__).parent / "prompts"


class LTXAVTextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LTXAVTextEncoderLoader", display_name="LTXV Audio Text Encoder Loader",
            category="advanced/loaders", description="[Recipes]\n\nltxav: gemma 3 12B",
            inputs=[io.Combo.Input("text_encoder", options=context.list_files("text_encoders"),
                                   tooltip="Gemma 3 12B (ComfyUI's repackaged file, with its tokenizer)."),
                    io.Combo.Input("ckpt_name", options=context.list_files("checkpoints"),
                                   tooltip="The LTX-2 checkpoint whose text projection and connectors to use."),
                    io.Combo.Input("device", options=["default", "cpu"], advanced=True)],
            outputs=[io.Clip.Output()])

    @classmethod
    def execute(cls, text_encoder: str, ckpt_name: str, device: str = "default") -> io.NodeOutput:
        from .text import ltxav_clip

        return io.NodeOutput(ltxav_clip(context.full_path("text_encoders", text_encoder),
                                        context.full_path("checkpoints", ckpt_name),
                                        embedding_directory=context.embedding_directory))


@lru_cache(maxsize=2)
def system_prompt(kind: str) -> str:
    """The prompt-enhancement instructions for ``t2v`` or ``i2v`` (see the module docstring)."""
    return (PROMPTS / f"{kind}_system.txt").read_text(encoding="utf-8").strip()


def enhancer_prompt(prompt: str, image: bool, system: str = "", chat: str = "gemma3") -> str:
    """Gemma 3's (or, for ``chat="gemma4"``, Gemma 4's) chat turns around the user's text (see the module's
    docstring)."""
    system = system.strip() or system_prompt("i2v" if image else "t2v")
    if chat == "gemma4":
        from .text_gemma4 import chat_prompt

        media = "<|image|>\n" if image else ""
        return chat_prompt(system, f"{media}User Raw Input Prompt: {prompt}.")
    media = "\n<image_soft_token>\n" if image else ""
    return (f"<start_of_turn>system\n{system}<end_of_turn>\n"
            f"<start_of_turn>user\n{media}\nUser Raw Input Prompt: {prompt}.<end_of_turn>\n"
            "<start_of_turn>model\n")


class TextGenerateLTX2Prompt(TextGenerate):
    @classmethod
    def define_schema(cls) -> io.Schema:
        schema = super().define_schema()
        return io.Schema(node_id="TextGenerateLTX2Prompt", display_name="Generate LTX2 Prompt",
                         category=schema.category, search_aliases=["prompt enhance", "LLM", "gemma"],
                         description="Expands a short prompt into a detailed LTX-2 video prompt with Gemma 3.",
                         inputs=schema.inputs, outputs=schema.outputs)

    @classmethod
    def execute(cls, clip: Any, prompt: str, max_length: int, sampling_mode: dict[str, Any], image: Any = None,
                video: Any = None, audio: Any = None, thinking: bool = False, use_default_template: bool = True,
                mtp: str = "auto", system_prompt: str = "") -> io.NodeOutput:
        chat = getattr(getattr(clip, "tokenizer", None), "chat", "gemma3")
        text = enhancer_prompt(prompt, image is not None, system_prompt or "", chat)
        out = super().execute(clip, text, max_length, sampling_mode, image=image, video=video, audio=audio,
                              thinking=thinking, use_default_template=use_default_template, mtp=mtp)
        return io.NodeOutput(out.args[0] or prompt, out.args[1])


NODES = [
    NodeDef("LTXAVTextEncoderLoader", LTXAVTextEncoderLoader, "LTXV Audio Text Encoder Loader", MODULE),
    NodeDef("TextGenerateLTX2Prompt", TextGenerateLTX2Prompt, "Generate LTX2 Prompt", TEXTGEN_MODULE),
]
