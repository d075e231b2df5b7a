"""TextGenerate: a chat LLM loaded as a CLIP writes text from a prompt (current ComfyUI's ``nodes_textgen``).

The CLIP's tokenizer wraps the prompt in its model's chat template (unless
``use_default_template`` is off), the text encoder generates up to
``max_length`` tokens, greedy or sampled (``sampling_mode``), and the text
is split into the answer and the reasoning a thinking model wrote between
``<think>`` and ``</think>``. ``mtp`` picks ComfyUI's multi-token-prediction
drafting, which needs MTP weights no encoder here has, so it changes nothing.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from .common import NodeDef

MODULE = "comfy_extras.nodes_textgen"
OPEN, CLOSE = "<think>", "</think>"


def split_reasoning(generated: str) -> tuple[str, str]:
    """(answer, reasoning) of generated text.

    Everything before ``</think>`` is reasoning; with no ``</think>`` (the
    length limit cut the reasoning short) text that opens with ``<think>`` is
    all reasoning, and any other text all answer.
    """
    head, close, tail = generated.partition(CLOSE)
    if not close and not head.lstrip().startswith(OPEN):
        return generated.strip(), ""
    return tail.strip(), head.replace(OPEN, "", 1).strip()


class TextGenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        sampled = [
            io.Float.Input("temperature", default=0.7, min=0.01, max=2.0, step=0.000001),
            io.Int.Input("top_k", default=64, min=0, max=1000),
            io.Float.Input("top_p", default=0.95, min=0.0, max=1.0, step=0.01),
            io.Float.Input("min_p", default=0.05, min=0.0, max=1.0, step=0.01),
            io.Float.Input("repetition_penalty", default=1.05, min=0.0, max=5.0, step=0.01),
            io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff),
            io.Float.Input("presence_penalty", optional=True, default=0.0, min=0.0, max=5.0, step=0.01),
        ]
        return io.Schema(
            node_id="TextGenerate",
            display_name="Generate Text",
            category="text",
            search_aliases=["LLM", "gemma"],
            description="Writes text with the chat language model a CLIP loader loaded (Qwen3, Qwen2.5-VL).",
            inputs=[
                io.Clip.Input("clip"),
                io.String.Input("prompt", multiline=True, dynamic_prompts=True, default=""),
                io.Image.Input("image", optional=True, tooltip="An image for models that see (Qwen2.5-VL)."),
                io.Image.Input("video", optional=True, tooltip="Video frames; no model here reads them yet."),
                io.Audio.Input("audio", optional=True, tooltip="Audio; no model here reads it yet."),
                io.Int.Input("max_length", default=512, min=1, max=32768,
                             tooltip="The most tokens to generate."),
                io.DynamicCombo.Input("sampling_mode", display_name="Sampling Mode", options=[
                    io.DynamicCombo.Option("on", sampled),
                    io.DynamicCombo.Option("off", []),
                ], tooltip="on: sample with these settings and seed; off: always the most likely token."),
                io.Boolean.Input("thinking", optional=True, default=False,
                                 tooltip="Let a model with a thinking mode (Qwen3) reason before answering."),
                io.Boolean.Input("use_default_template", optional=True, default=True, advanced=True,
                                 tooltip="Wrap the prompt in the model's chat template; off sends it as is."),
                io.Combo.Input("mtp", options=["auto", "off", "2", "3", "4", "5"], default="auto", optional=True,
                               tooltip="Multi-token-prediction drafting; no effect without MTP weights."),
                io.String.Input("system_prompt", force_input=True, optional=True,
                                tooltip="Replaces the chat template's system prompt (not used without it)."),
            ],
            outputs=[io.String.Output(display_name="generated_text"), io.String.Output(display_name="thinking")],
        )

    @classmethod
    def execute(cls, clip: Any, prompt: str, max_length: int, sampling_mode: dict[str, Any], image: Any = None,
                video: Any = None, audio: Any = None, thinking: bool = False, use_default_template: bool = True,
                mtp: str = "auto", system_prompt: str = "") -> io.NodeOutput:
        if clip is None or not hasattr(clip, "generate"):
            raise ValueError("TextGenerate needs a CLIP whose text encoder is a chat language model")
        tokens = clip.tokenize(prompt, image=image, video=video, audio=audio, min_length=1, thinking=thinking,
                               skip_template=not use_default_template,
                               system_prompt=system_prompt if use_default_template else "")
        sampled = sampling_mode.get("sampling_mode") == "on"
        ids = clip.generate(
            tokens, do_sample=sampled, max_length=max_length,
            temperature=sampling_mode.get("temperature", 1.0), top_k=sampling_mode.get("top_k", 50),
            top_p=sampling_mode.get("top_p", 1.0), min_p=sampling_mode.get("min_p", 0.0),
            repetition_penalty=sampling_mode.get("repetition_penalty", 1.0),
            presence_penalty=sampling_mode.get("presence_penalty", 0.0), seed=sampling_mode.get("seed"),
            mtp=mtp != "off")
        return io.NodeOutput(*split_reasoning(clip.decode(ids)))


NODES = [NodeDef("TextGenerate", TextGenerate, "Generate Text", MODULE)]
