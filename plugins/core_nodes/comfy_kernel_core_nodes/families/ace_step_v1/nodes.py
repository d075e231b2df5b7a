"""ACE-Step 1.0's nodes (ComfyUI's comfy_extras.nodes_ace): the tags-and-lyrics encoder and the empty latent."""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from ...nodes.common import NodeDef

MODULE = "comfy_extras.nodes_ace"
#: 44.1 kHz audio, 512 samples per mel frame, 8 mel frames per latent frame
SAMPLE_RATE = 44100


class TextEncodeAceStepAudio(io.ComfyNode):
    """The tags through umt5-base; the lyrics' token ids ride along (``conditioning_lyrics``) with
    ``lyrics_strength``, which scales what the lyrics add inside the DiT."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="TextEncodeAceStepAudio", category="conditioning", inputs=[
            io.Clip.Input("clip"),
            io.String.Input("tags", multiline=True, dynamic_prompts=True),
            io.String.Input("lyrics", multiline=True, dynamic_prompts=True),
            io.Float.Input("lyrics_strength", default=1.0, min=0.0, max=10.0, step=0.01),
        ], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, clip: Any, tags: str, lyrics: str, lyrics_strength: float) -> io.NodeOutput:
        from ...nodes.clip_vision import set_values

        conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(tags, lyrics=lyrics))
        return io.NodeOutput(set_values(conditioning, {"lyrics_strength": lyrics_strength}))


class EmptyAceStepLatentAudio(io.ComfyNode):
    """Zero latents of ``seconds`` of audio: [batch, 8, 16, seconds * 44100 / 4096] (rounded down)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="EmptyAceStepLatentAudio", category="latent/audio", inputs=[
            io.Float.Input("seconds", default=120.0, min=1.0, max=1000.0, step=0.1),
            io.Int.Input("batch_size", default=1, min=1, max=4096,
                         tooltip="The number of latent images in the batch."),
        ], outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, seconds: float, batch_size: int) -> io.NodeOutput:
        import torch

        length = int(seconds * SAMPLE_RATE / 512 / 8)
        return io.NodeOutput({"samples": torch.zeros(batch_size, 8, 16, length), "type": "audio"})


NODES = [
    NodeDef("TextEncodeAceStepAudio", TextEncodeAceStepAudio, None, MODULE),
    NodeDef("EmptyAceStepLatentAudio", EmptyAceStepLatentAudio, None, MODULE),
]
