"""Wan 2.2 S2V's nodes: the audio encoder (comfy_extras.nodes_audio_encoder) and the sound-to-video conditioning.

``nodes.py`` lists them; this module imports nothing of the node package at
its top (importing that package collects every family's nodes).

``AudioEncoderEncode`` returns AUDIO_ENCODER_OUTPUT, ComfyUI's dict
(``encoded_audio``, ``encoded_audio_all_layers``, ``audio_samples``).
``WanSoundImageToVideo`` resamples every wav2vec2 hidden state from 50 to 30
frames a second, picks the state nearest each video frame at 16 frames a
second (zeros past the end of the sound) and hands the S2V model the window
of its clip, [1, layers, width, 4 x latent frames], as ``audio_embed`` (zeros
for the negative prompt); a reference image's latents go in as
``reference_latents``, preceding frames' latents as ``reference_motion`` (the
last 19 latent frames), and a control video's latents as ``control_video``
(the latents of black frames where there is none, as ComfyUI gives them).
``WanSoundImageToVideoExtend`` continues a clip: it reads the size, batch and
audio position from the latents so far and passes them as the motion.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from comfy_kernel.nodes import io

if TYPE_CHECKING:  # the node list is read at start-up, before torch is imported
    import torch

#: wav2vec2 states per second, the rate they are resampled to, and the video rate S2V was trained at
AUDIO_RATE, RESAMPLED_RATE, VIDEO_RATE = 50, 30, 16
#: frames of preceding video the S2V model packs as motion (pixels, latents)
MOTION_FRAMES, MOTION_LATENTS = 73, 19


class AudioEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ...nodes import context

        return io.Schema(node_id="AudioEncoderLoader", category="loaders",
                         inputs=[io.Combo.Input("audio_encoder_name", options=context.list_files("audio_encoders"))],
                         outputs=[io.AudioEncoder.Output()])

    @classmethod
    def execute(cls, audio_encoder_name: str) -> io.NodeOutput:
        from ...nodes import context
        from .audio_encoder import load

        return io.NodeOutput(load(context.full_path("audio_encoders", audio_encoder_name)))


class AudioEncoderEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="AudioEncoderEncode", category="conditioning",
                         inputs=[io.AudioEncoder.Input("audio_encoder"), io.Audio.Input("audio")],
                         outputs=[io.AudioEncoderOutput.Output()])

    @classmethod
    def execute(cls, audio_encoder: Any, audio: dict[str, Any]) -> io.NodeOutput:
        return io.NodeOutput(audio_encoder.encode_audio(audio["waveform"], audio["sample_rate"]))


def audio_windows(states: tuple[torch.Tensor, ...] | list[torch.Tensor], clip_frames: int) -> torch.Tensor:
    """Per video frame (16 a second) the wav2vec2 states nearest in time: [1, layers, width, frames].

    The states (each [1, audio frames, width] at 50 a second) are linearly
    resampled to 30 a second; the video frames cover whole clips of
    ``clip_frames`` until the sound is used up, frames past its end are zero.
    """
    import numpy as np
    import torch

    feat = torch.cat(list(states))
    count = int(feat.shape[1] / float(AUDIO_RATE) * RESAMPLED_RATE)
    feat = torch.nn.functional.interpolate(feat.transpose(1, 2), size=count, mode="linear",
                                           align_corners=True).transpose(1, 2)
    clips = int(count / (clip_frames * RESAMPLED_RATE / VIDEO_RATE)) + 1
    frames = clips * clip_frames
    available = math.ceil(frames / VIDEO_RATE * RESAMPLED_RATE)
    times = np.linspace(0, frames / VIDEO_RATE, frames, endpoint=False)
    index = torch.from_numpy(np.clip(np.round(times * RESAMPLED_RATE).astype(np.int64), 0, available - 1))
    picked = feat[:, index.clamp(max=count - 1)] * (index < count).to(feat.dtype)[None, :, None]
    return picked.permute(0, 2, 1).unsqueeze(0)


def sound_to_video(positive: list, negative: list, vae: Any, width: int, height: int, length: int,
                   batch_size: int, frame_offset: int = 0, ref_image: Any = None,
                   audio_encoder_output: dict[str, Any] | None = None, control_video: Any = None,
                   ref_motion: Any = None, ref_motion_latent: Any = None) -> tuple[list, list, dict, int]:
    """ComfyUI's ``wan_sound_to_video``: the conditioning of one clip and its empty latent, and the audio
    position after it (video frames)."""
    import torch

    from ...model.latent_formats import Wan21
    from .nodes import _fit, _latent_frames, _with

    frames = _latent_frames(length)
    if audio_encoder_output is not None:
        clip_frames = frames * 4
        window = audio_windows(audio_encoder_output["encoded_audio_all_layers"], clip_frames)
        window = window[..., frame_offset: frame_offset + clip_frames]
        if window.shape[-1] > 0:
            positive = _with(positive, {"audio_embed": window})
            negative = _with(negative, {"audio_embed": window * 0.0})
            frame_offset += clip_frames
    if ref_image is not None:
        ref_latent = vae.encode(_fit(ref_image[:1], width, height)[..., :3])
        positive = _with(positive, {"reference_latents": [ref_latent]}, append=True)
        negative = _with(negative, {"reference_latents": [ref_latent]}, append=True)
    if ref_motion is not None:
        ref_motion = _fit(ref_motion[-MOTION_FRAMES:], width, height)[..., :3]
        if ref_motion.shape[0] < MOTION_FRAMES:
            grey = torch.full([MOTION_FRAMES, height, width, 3], 0.5, dtype=ref_motion.dtype)
            grey[-ref_motion.shape[0]:] = ref_motion
            ref_motion = grey
        ref_motion_latent = vae.encode(ref_motion)
    if ref_motion_latent is not None:
        motion = {"reference_motion": ref_motion_latent[:, :, -MOTION_LATENTS:]}
        positive, negative = _with(positive, motion), _with(negative, motion)
    latent = torch.zeros([batch_size, 16, frames, height // 8, width // 8])
    control = Wan21().process_out(torch.zeros_like(latent))
    if control_video is not None:
        encoded = vae.encode(_fit(control_video[:length], width, height)[..., :3])
        control[:, :, : encoded.shape[2]] = encoded
    positive, negative = _with(positive, {"control_video": control}), _with(negative, {"control_video": control})
    return positive, negative, {"samples": latent}, frame_offset


def _outputs() -> list:
    return [io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
            io.Latent.Output(display_name="latent")]


class WanSoundImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ...nodes.common import MAX_RESOLUTION

        return io.Schema(node_id="WanSoundImageToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            io.Int.Input("width", default=832, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("height", default=480, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("length", default=77, min=1, max=MAX_RESOLUTION, step=4),
            io.Int.Input("batch_size", default=1, min=1, max=4096),
            io.AudioEncoderOutput.Input("audio_encoder_output", optional=True),
            io.Image.Input("ref_image", optional=True),
            io.Image.Input("control_video", optional=True),
            io.Image.Input("ref_motion", optional=True),
        ], outputs=_outputs())

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, ref_image=None,
                audio_encoder_output=None, control_video=None, ref_motion=None) -> io.NodeOutput:
        positive, negative, latent, _ = sound_to_video(
            positive, negative, vae, width, height, length, batch_size, ref_image=ref_image,
            audio_encoder_output=audio_encoder_output, control_video=control_video, ref_motion=ref_motion)
        return io.NodeOutput(positive, negative, latent)


class WanSoundImageToVideoExtend(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ...nodes.common import MAX_RESOLUTION

        return io.Schema(node_id="WanSoundImageToVideoExtend", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            io.Int.Input("length", default=77, min=1, max=MAX_RESOLUTION, step=4),
            io.Latent.Input("video_latent"),
            io.AudioEncoderOutput.Input("audio_encoder_output", optional=True),
            io.Image.Input("ref_image", optional=True),
            io.Image.Input("control_video", optional=True),
        ], outputs=_outputs())

    @classmethod
    def execute(cls, positive, negative, vae, length, video_latent, ref_image=None, audio_encoder_output=None,
                control_video=None) -> io.NodeOutput:
        samples = video_latent["samples"]
        positive, negative, latent, _ = sound_to_video(
            positive, negative, vae, samples.shape[-1] * 8, samples.shape[-2] * 8, length, samples.shape[0],
            frame_offset=samples.shape[-3] * 4, ref_image=ref_image, audio_encoder_output=audio_encoder_output,
            control_video=control_video, ref_motion_latent=samples)
        return io.NodeOutput(positive, negative, latent)

