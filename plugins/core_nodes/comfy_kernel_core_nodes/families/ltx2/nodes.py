"""LTX-2's audio VAE nodes (ComfyUI's comfy_extras.nodes_lt_audio) and the model-independent LTX-Video nodes
(comfy_extras.nodes_lt: the empty video latent and the frame rate conditioning).

``LTXVAudioVAELoader`` reads the audio autoencoder and vocoder out of an LTX-2
checkpoint (:func:`.audio_vae.load_audio_vae`); ``LTXVAudioVAEEncode`` is
VAEEncodeAudio with its inputs the other way round; ``LTXVAudioVAEDecode``
turns audio latents into a waveform at the vocoder's rate;
``LTXVEmptyLatentAudio`` makes zero latents as long as a video of
``frames_number`` frames. ``EmptyLTXVLatentVideo`` and ``LTXVConditioning``
are 0.3.64's. The conditioning and scheduler nodes are in ``video_nodes.py``, the latent ones in ``latent_nodes.py``,
the text encoder's in ``text_nodes.py``.
"""

from __future__ import annotations

from comfy_kernel.nodes import io

from ...nodes import context
from ...nodes.common import NodeDef
from . import latent_nodes as L
from . import text_nodes
from . import video_nodes as V
from .guider import LTXVDualCFGGuider
from .reference_audio import LTXVReferenceAudio

MODULE = "comfy_extras.nodes_lt_audio"
MODULE_LT = "comfy_extras.nodes_lt"
#: pixels per latent cell, pixel frames per latent frame (after the first), latent channels of the video VAE
SPATIAL, TEMPORAL, CHANNELS = 32, 8, 128


class LTXVAudioVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVAudioVAELoader", display_name="Load LTXV Audio VAE", category="model/loaders",
                         inputs=[io.Combo.Input("ckpt_name", options=context.list_files("checkpoints"),
                                                tooltip="Audio VAE checkpoint to load.")],
                         outputs=[io.Vae.Output(display_name="Audio VAE")])

    @classmethod
    def execute(cls, ckpt_name: str) -> io.NodeOutput:
        from .audio_vae import load_audio_vae

        return io.NodeOutput(load_audio_vae(context.full_path("checkpoints", ckpt_name)))


class LTXVAudioVAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVAudioVAEEncode", display_name="LTXV Audio VAE Encode",
                         category="model/latent/ltxv",
                         inputs=[io.Audio.Input("audio", tooltip="The audio to be encoded."),
                                 io.Vae.Input("audio_vae", display_name="Audio VAE",
                                              tooltip="The Audio VAE model to use for encoding.")],
                         outputs=[io.Latent.Output(display_name="Audio Latent")])

    @classmethod
    def execute(cls, audio, audio_vae) -> io.NodeOutput:
        from ...nodes.audio import VAEEncodeAudio

        return io.NodeOutput(*VAEEncodeAudio().encode(audio, audio_vae))


class LTXVAudioVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVAudioVAEDecode", display_name="LTXV Audio VAE Decode",
                         category="model/latent/ltxv",
                         inputs=[io.Latent.Input("samples", tooltip="The latent to be decoded."),
                                 io.Vae.Input("audio_vae", display_name="Audio VAE",
                                              tooltip="The Audio VAE model used for decoding the latent.")],
                         outputs=[io.Audio.Output(display_name="Audio")])

    @classmethod
    def execute(cls, samples, audio_vae) -> io.NodeOutput:
        from ...model.nested import is_nested

        latent = samples["samples"]
        if is_nested(latent):  # an audio + video latent: the audio part is the last
            latent = latent.unbind()[-1]
        waveform = audio_vae.decode(latent).movedim(-1, 1)
        return io.NodeOutput({"waveform": waveform, "sample_rate": int(audio_vae.output_sample_rate)})


class LTXVEmptyLatentAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVEmptyLatentAudio", display_name="LTXV Empty Latent Audio",
                         category="model/latent/ltxv", inputs=[
                             io.Int.Input("frames_number", default=97, min=1, max=1000, step=1, display_mode="number",
                                          tooltip="Number of frames."),
                             io.Int.Input("frame_rate", default=25, min=1, max=1000, step=1, display_mode="number",
                                          tooltip="Number of frames per second."),
                             io.Int.Input("batch_size", default=1, min=1, max=4096, display_mode="number",
                                          tooltip="The number of latent audio samples in the batch."),
                             io.Vae.Input("audio_vae", display_name="Audio VAE",
                                          tooltip="The Audio VAE model to get configuration from."),
                         ], outputs=[io.Latent.Output(display_name="Latent")])

    @classmethod
    def execute(cls, frames_number: int, frame_rate: int, batch_size: int, audio_vae) -> io.NodeOutput:
        import torch

        frames = audio_vae.num_of_latents_from_frames(frames_number, frame_rate)
        latent = torch.zeros([batch_size, audio_vae.latent_channels, frames, audio_vae.latent_frequency_bins])
        return io.NodeOutput({"samples": latent, "type": "audio"})


class EmptyLTXVLatentVideo(io.ComfyNode):
    """Zeros [batch, 128, (length - 1) / 8 + 1, height / 32, width / 32]."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="EmptyLTXVLatentVideo", category="latent/video/ltxv", inputs=[
            io.Int.Input("width", default=768, min=64, max=16384, step=32),
            io.Int.Input("height", default=512, min=64, max=16384, step=32),
            io.Int.Input("length", default=97, min=1, max=16384, step=8),
            io.Int.Input("batch_size", default=1, min=1, max=4096),
        ], outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, width: int, height: int, length: int, batch_size: int = 1) -> io.NodeOutput:
        import torch

        latent = torch.zeros([batch_size, CHANNELS, (length - 1) // TEMPORAL + 1, height // SPATIAL, width // SPATIAL])
        return io.NodeOutput({"samples": latent})


class LTXVConditioning(io.ComfyNode):
    """The video's frame rate on both conditionings (the transformer's positions are in seconds)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVConditioning", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"),
            io.Float.Input("frame_rate", default=25.0, min=0.0, max=1000.0, step=0.01),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")])

    @classmethod
    def execute(cls, positive, negative, frame_rate: float) -> io.NodeOutput:
        from ...nodes.conditioning_area import set_values

        return io.NodeOutput(set_values(positive, {"frame_rate": frame_rate}),
                             set_values(negative, {"frame_rate": frame_rate}))


NODES = [
    NodeDef("LTXVAudioVAELoader", LTXVAudioVAELoader, "Load LTXV Audio VAE", MODULE),
    NodeDef("LTXVAudioVAEEncode", LTXVAudioVAEEncode, "LTXV Audio VAE Encode", MODULE),
    NodeDef("LTXVAudioVAEDecode", LTXVAudioVAEDecode, "LTXV Audio VAE Decode", MODULE),
    NodeDef("LTXVEmptyLatentAudio", LTXVEmptyLatentAudio, "LTXV Empty Latent Audio", MODULE),
    NodeDef("EmptyLTXVLatentVideo", EmptyLTXVLatentVideo, None, MODULE_LT),
    NodeDef("LTXVConditioning", LTXVConditioning, None, MODULE_LT),
    NodeDef("LTXVImgToVideo", V.LTXVImgToVideo, None, MODULE_LT),
    NodeDef("LTXVImgToVideoInplace", V.LTXVImgToVideoInplace, None, MODULE_LT),
    NodeDef("LTXVAddGuide", V.LTXVAddGuide, None, MODULE_LT),
    NodeDef("GetICLoRAParameters", V.GetICLoRAParameters, "Get IC-LoRA Parameters", MODULE_LT),
    NodeDef("LTXVCropGuides", V.LTXVCropGuides, None, MODULE_LT),
    NodeDef("ModelSamplingLTXV", V.ModelSamplingLTXV, None, MODULE_LT),
    NodeDef("LTXVScheduler", V.LTXVScheduler, None, MODULE_LT),
    NodeDef("LTXVPreprocess", V.LTXVPreprocess, None, MODULE_LT),
    NodeDef("LTXVConcatAVLatent", L.LTXVConcatAVLatent, "Concat AV Latent", MODULE_LT),
    NodeDef("LTXVSeparateAVLatent", L.LTXVSeparateAVLatent, "Separate AV Latent", MODULE_LT),
    NodeDef("LTXVLatentUpsampler", L.LTXVLatentUpsampler, None, "comfy_extras.nodes_lt_upsampler"),
    NodeDef("LTXVDualCFGGuider", LTXVDualCFGGuider, "LTXV Dual CFG Guider", MODULE_LT),
    NodeDef("LTXVReferenceAudio", LTXVReferenceAudio, "LTXV Reference Audio (ID-LoRA)", MODULE_LT),
    *text_nodes.NODES,
]
