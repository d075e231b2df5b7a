"""ACE-Step 1.5's nodes (ComfyUI's comfy_extras.nodes_ace): the text-and-metadata encoder, the empty latent and
the timbre reference."""

from __future__ import annotations

from comfy_kernel.nodes import io

from ...nodes.common import NodeDef

MODULE = "comfy_extras.nodes_ace"
LANGUAGES = ["en", "ja", "zh", "es", "de", "fr", "pt", "ru", "it", "nl", "pl", "tr", "vi", "cs", "fa", "id", "ko",
             "uk", "hu", "ar", "sv", "ro", "el"]
KEYS = [f"{root} {quality}" for quality in ("major", "minor")
        for root in ("C", "C#", "Db", "D", "D#", "Eb", "E", "F", "F#", "Gb", "G", "G#", "Ab", "A", "A#", "Bb", "B")]
#: latent frames per second: 48 kHz audio, 1920 samples a frame
FRAMES_PER_SECOND = 48000 / 1920


class TextEncodeAceStepAudio15(io.ComfyNode):
    """Tags, lyrics and musical metadata; the language model writes the song's audio codes unless turned off."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="TextEncodeAceStepAudio1.5", category="conditioning", inputs=[
            io.Clip.Input("clip"),
            io.String.Input("tags", multiline=True, dynamic_prompts=True),
            io.String.Input("lyrics", multiline=True, dynamic_prompts=True),
            io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True),
            io.Int.Input("bpm", default=120, min=10, max=300),
            io.Float.Input("duration", default=120.0, min=0.0, max=2000.0, step=0.1),
            io.Combo.Input("timesignature", options=["2", "3", "4", "6"]),
            io.Combo.Input("language", options=LANGUAGES),
            io.Combo.Input("keyscale", options=KEYS),
            io.Boolean.Input("generate_audio_codes", default=True, advanced=True,
                             tooltip="Let the language model write audio codes (slower, better songs); turn it "
                                     "off when a reference audio drives the generation."),
            io.Float.Input("cfg_scale", default=2.0, min=0.0, max=100.0, step=0.1, advanced=True),
            io.Float.Input("temperature", default=0.85, min=0.0, max=2.0, step=0.01, advanced=True),
            io.Float.Input("top_p", default=0.9, min=0.0, max=2000.0, step=0.01, advanced=True),
            io.Int.Input("top_k", default=0, min=0, max=100, advanced=True),
            io.Float.Input("min_p", default=0.0, min=0.0, max=1.0, step=0.001, advanced=True),
        ], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, clip, tags, lyrics, seed, bpm, duration, timesignature, language, keyscale,
                generate_audio_codes, cfg_scale, temperature, top_p, top_k, min_p) -> io.NodeOutput:
        tokens = clip.tokenize(tags, lyrics=lyrics, bpm=bpm, duration=duration, timesignature=int(timesignature),
                               language=language, keyscale=keyscale, seed=seed,
                               generate_audio_codes=generate_audio_codes, cfg_scale=cfg_scale,
                               temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p)
        return io.NodeOutput(clip.encode_from_tokens_scheduled(tokens))


class EmptyAceStep15LatentAudio(io.ComfyNode):
    """Zero latents of ``seconds`` of audio: [batch, 64, 25 frames a second]."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="EmptyAceStep1.5LatentAudio", display_name="Empty Ace Step 1.5 Latent Audio",
                         category="latent/audio", inputs=[
                             io.Float.Input("seconds", default=120.0, min=1.0, max=1000.0, step=0.01),
                             io.Int.Input("batch_size", default=1, min=1, max=4096,
                                          tooltip="The number of latent images in the batch."),
                         ], outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, seconds, batch_size) -> io.NodeOutput:
        import torch

        latent = torch.zeros([batch_size, 64, round(seconds * FRAMES_PER_SECOND)])
        return io.NodeOutput({"samples": latent, "type": "audio"})


class ReferenceTimbreAudio(io.ComfyNode):
    """A reference song's latent as the timbre the DiT follows (its codes are then not used: a cover)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="ReferenceTimbreAudio", display_name="Reference Audio",
                         category="advanced/conditioning/audio", is_experimental=True,
                         description="Sets an encoded reference audio as ACE-Step 1.5's timbre reference.",
                         inputs=[io.Conditioning.Input("conditioning"), io.Latent.Input("latent", optional=True)],
                         outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, conditioning, latent=None) -> io.NodeOutput:
        if latent is None:
            return io.NodeOutput(conditioning)
        key = "reference_audio_timbre_latents"
        return io.NodeOutput([[cond, {**opts, key: list(opts.get(key) or []) + [latent["samples"]]}]
                              for cond, opts in conditioning])


NODES = [
    NodeDef("TextEncodeAceStepAudio1.5", TextEncodeAceStepAudio15, None, MODULE),
    NodeDef("EmptyAceStep1.5LatentAudio", EmptyAceStep15LatentAudio, "Empty Ace Step 1.5 Latent Audio", MODULE),
    NodeDef("ReferenceTimbreAudio", ReferenceTimbreAudio, "Reference Audio", MODULE),
]
