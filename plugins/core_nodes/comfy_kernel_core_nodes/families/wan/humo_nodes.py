"""HuMo's node (comfy_extras.nodes_wan ``WanHuMoImageToVideo``): the reference image and the speech windows.

The Whisper states (33 of them, 50 a second) become five averages (layers
0-7, 8-15, 16-23, 24-31, and the final normed one), cut to the sound's
length and linearly resampled to 25 a second, HuMo's video rate. Latent
frame i gets the eight of them at video frames 4i - 5 ... 4i + 2 (zeros
outside the sound): [1, latent frames, 8, 5, width] as ``audio_embed``, zeros
for the negative prompt, and all-zero windows (one frame more, 1280 wide, as
ComfyUI gives them) when no sound is connected. The reference image's latents
go in as ``reference_latents``, zeros for the negative prompt, a zero latent
frame for both without an image.

``nodes.py`` lists the node; this module imports nothing of the node
package at its top (importing that package collects every family's nodes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from comfy_kernel.nodes import io

if TYPE_CHECKING:  # the node list is read at start-up, before torch is imported
    import torch

#: Whisper states per second, HuMo's video rate, and the audio samples of one video frame at 16 kHz
AUDIO_RATE, VIDEO_RATE, SAMPLES_PER_FRAME = 50, 25, 640
#: the Whisper hidden states averaged into each of the five features (the last one alone)
LAYER_GROUPS = ((0, 8), (8, 16), (16, 24), (24, 32), (32, 33))
#: the width of the released Whisper encoder (the all-zero windows without sound)
WHISPER_WIDTH = 1280


def resample_rate(features: torch.Tensor, rate: float, new_rate: float) -> torch.Tensor:
    """[B, frames, C] at ``rate`` -> [B, int(frames / rate * new_rate), C], linear, ends aligned."""
    import torch.nn.functional as F

    count = int(features.shape[1] / float(rate) * new_rate)
    return F.interpolate(features.transpose(1, 2), size=count, mode="linear", align_corners=True).transpose(1, 2)


def audio_windows(encoder_output: dict[str, Any], length: int) -> torch.Tensor:
    """The HuMo audio windows of a ``length``-frame video: [1, latent frames, 8, 5, width]."""
    import torch

    states = torch.stack(list(encoder_output["encoded_audio_all_layers"]), dim=2)
    states = states[:, : encoder_output["audio_samples"] // SAMPLES_PER_FRAME * 2]
    features = torch.stack([resample_rate(states[:, :, a:b].mean(dim=2), AUDIO_RATE, VIDEO_RATE)
                            for a, b in LAYER_GROUPS], dim=2)[0]
    frames = (length - 1) // 4 + 1
    if features.shape[0] == 0:
        return features.new_zeros(1, frames, 8, *features.shape[1:])
    index = torch.arange(8) + 4 * torch.arange(frames)[:, None] - 5
    inside = (index >= 0) & (index < features.shape[0])
    picked = features[index.clamp(0, features.shape[0] - 1)] * inside[..., None, None].to(features.dtype)
    return picked.unsqueeze(0)


class WanHuMoImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ...nodes.common import MAX_RESOLUTION

        return io.Schema(node_id="WanHuMoImageToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            io.Int.Input("width", default=832, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("height", default=480, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("length", default=97, min=1, max=MAX_RESOLUTION, step=4),
            io.Int.Input("batch_size", default=1, min=1, max=4096),
            io.AudioEncoderOutput.Input("audio_encoder_output", optional=True),
            io.Image.Input("ref_image", optional=True),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent")], is_experimental=True)

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, ref_image=None,
                audio_encoder_output=None) -> io.NodeOutput:
        import torch

        from .nodes import _fit, _latent_frames, _with

        frames = _latent_frames(length)
        if ref_image is not None:
            ref_latent = vae.encode(_fit(ref_image[:1], width, height)[..., :3])
            positive = _with(positive, {"reference_latents": [ref_latent]}, append=True)
            negative = _with(negative, {"reference_latents": [torch.zeros_like(ref_latent)]}, append=True)
        else:
            zero = torch.zeros([batch_size, 16, 1, height // 8, width // 8])
            positive = _with(positive, {"reference_latents": [zero]}, append=True)
            negative = _with(negative, {"reference_latents": [zero]}, append=True)
        if audio_encoder_output is not None:
            audio = audio_windows(audio_encoder_output, length)
            positive = _with(positive, {"audio_embed": audio})
            negative = _with(negative, {"audio_embed": torch.zeros_like(audio)})
        else:
            silence = torch.zeros([batch_size, frames + 1, 8, 5, WHISPER_WIDTH])
            positive, negative = _with(positive, {"audio_embed": silence}), _with(negative, {"audio_embed": silence})
        latent = torch.zeros([batch_size, 16, frames, height // 8, width // 8])
        return io.NodeOutput(positive, negative, {"samples": latent})
