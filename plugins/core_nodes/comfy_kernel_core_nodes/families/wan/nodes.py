"""Wan's nodes (ComfyUI's comfy_extras.nodes_wan) and the empty video latent its templates start from.

``WanImageToVideo`` encodes the start image(s) padded with grey frames and
marks their latent frames as kept (``concat_latent_image`` / ``concat_mask``
for the I2V models' extra channels); ``Wan22ImageToVideoLatent`` writes the
start image into the 48-channel latent and keeps it through a noise mask
(the 5B model denoises only the rest); ``WanVaceToVideo`` encodes a control
video split into inactive / reactive parts and its mask for VACE models;
``WanCameraEmbedding`` turns a camera preset into Plücker ray embeddings
(``camera.py``) that ``WanCameraImageToVideo`` hands to the Fun camera models;
``WanPhantomSubjectToVideo`` appends subject images' latents after the video's frames.
The S2V nodes and the audio encoder's are in ``sound_nodes.py``, HuMo's in ``humo_nodes.py``, Animate's in
``animate_nodes.py``, ATI's (``WanTrackToVideo``) in ``tracks.py``, Wan-Move's in ``move.py``, InfiniteTalk's
(``WanInfiniteTalkToVideo``) in ``talk_nodes.py``.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from ...nodes.common import MAX_RESOLUTION, NodeDef
from .animate_nodes import WanAnimateToVideo
from .humo_nodes import WanHuMoImageToVideo
from .move import (
    GenerateTracks,
    WanMoveConcatTrack,
    WanMoveTracksFromCoords,
    WanMoveTrackToVideo,
    WanMoveVisualizeTracks,
)
from .sound_nodes import (
    AudioEncoderEncode,
    AudioEncoderLoader,
    WanSoundImageToVideo,
    WanSoundImageToVideoExtend,
)
from .talk_nodes import WanInfiniteTalkToVideo
from .tracks import WanTrackToVideo

MODULE = "comfy_extras.nodes_wan"
CAMERA_EMBEDDING = io.Custom("WAN_CAMERA_EMBEDDING")


def _fit(images: Any, width: int, height: int) -> Any:
    from comfy_kernel.nodes.resize import common_upscale

    return common_upscale(images.movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)


def _with(conditioning: list, values: dict[str, Any], append: bool = False) -> list:
    out = []
    for cond, opts in conditioning:
        opts = dict(opts)
        for key, value in values.items():
            opts[key] = list(opts.get(key, [])) + list(value) if append and key in opts else value
        out.append([cond, opts])
    return out


def _latent_frames(length: int) -> int:
    return (length - 1) // 4 + 1


def start_latents(vae: Any, start_image: Any, width: int, height: int, length: int) -> tuple[Any, Any]:
    """The I2V channels' inputs: the start image(s) fitted and followed by grey frames up to ``length``,
    encoded; and the mask [1, 1, latent frames, h, w] keeping their latent frames (0), the rest generated (1)."""
    import torch

    start_image = _fit(start_image[:length], width, height)
    image = torch.full((length, height, width, start_image.shape[-1]), 0.5, dtype=start_image.dtype)
    image[: start_image.shape[0]] = start_image
    concat = vae.encode(image[..., :3])
    mask = torch.ones((1, 1, _latent_frames(length), concat.shape[-2], concat.shape[-1]), dtype=start_image.dtype)
    mask[:, :, : _latent_frames(start_image.shape[0])] = 0.0
    return concat, mask


class EmptyHunyuanLatentVideo:
    """Zeros [batch, 16, (length - 1) / 4 + 1, height / 8, width / 8]: Wan 2.1 / HunyuanVideo latents."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "width": ("INT", {"default": 848, "min": 16, "max": MAX_RESOLUTION, "step": 16}),
            "height": ("INT", {"default": 480, "min": 16, "max": MAX_RESOLUTION, "step": 16}),
            "length": ("INT", {"default": 25, "min": 1, "max": MAX_RESOLUTION, "step": 4}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"
    CATEGORY = "latent/video"

    def generate(self, width: int, height: int, length: int, batch_size: int = 1) -> tuple:
        import torch

        return ({"samples": torch.zeros([batch_size, 16, _latent_frames(length), height // 8, width // 8])},)


class WanImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="WanImageToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            io.Int.Input("width", default=832, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("height", default=480, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("length", default=81, min=1, max=MAX_RESOLUTION, step=4),
            io.Int.Input("batch_size", default=1, min=1, max=4096),
            io.ClipVisionOutput.Input("clip_vision_output", optional=True),
            io.Image.Input("start_image", optional=True),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, start_image=None,
                clip_vision_output=None) -> io.NodeOutput:
        import torch

        latent = torch.zeros([batch_size, 16, _latent_frames(length), height // 8, width // 8])
        if start_image is not None:
            concat, mask = start_latents(vae, start_image, width, height, length)
            values = {"concat_latent_image": concat, "concat_mask": mask}
            positive, negative = _with(positive, values), _with(negative, values)
        if clip_vision_output is not None:
            values = {"clip_vision_output": clip_vision_output}
            positive, negative = _with(positive, values), _with(negative, values)
        return io.NodeOutput(positive, negative, {"samples": latent})


class Wan22ImageToVideoLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="Wan22ImageToVideoLatent", category="conditioning/inpaint", inputs=[
            io.Vae.Input("vae"),
            io.Int.Input("width", default=1280, min=32, max=MAX_RESOLUTION, step=32),
            io.Int.Input("height", default=704, min=32, max=MAX_RESOLUTION, step=32),
            io.Int.Input("length", default=49, min=1, max=MAX_RESOLUTION, step=4),
            io.Int.Input("batch_size", default=1, min=1, max=4096),
            io.Image.Input("start_image", optional=True),
        ], outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, vae, width, height, length, batch_size, start_image=None) -> io.NodeOutput:
        import torch

        from ...model.latent_formats import Wan22

        latent = torch.zeros([1, 48, _latent_frames(length), height // 16, width // 16])
        if start_image is None:
            return io.NodeOutput({"samples": latent})
        mask = torch.ones([1, 1, latent.shape[2], latent.shape[-2], latent.shape[-1]])
        encoded = vae.encode(_fit(start_image[:length], width, height))
        latent[:, :, : encoded.shape[-3]] = encoded
        mask[:, :, : encoded.shape[-3]] *= 0.0
        latent = Wan22().process_out(latent) * mask + latent * (1.0 - mask)
        repeat = (batch_size,) + (1,) * (latent.ndim - 1)
        return io.NodeOutput({"samples": latent.repeat(repeat), "noise_mask": mask.repeat(repeat)})


class WanVaceToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="WanVaceToVideo", category="conditioning/video_models",
                         inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            io.Int.Input("width", default=832, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("height", default=480, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("length", default=81, min=1, max=MAX_RESOLUTION, step=4),
            io.Int.Input("batch_size", default=1, min=1, max=4096),
            io.Float.Input("strength", default=1.0, min=0.0, max=1000.0, step=0.01),
            io.Image.Input("control_video", optional=True), io.Mask.Input("control_masks", optional=True),
            io.Image.Input("reference_image", optional=True),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent"), io.Int.Output(display_name="trim_latent")])

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, strength, control_video=None,
                control_masks=None, reference_image=None) -> io.NodeOutput:
        import torch
        import torch.nn.functional as F

        from ...model.latent_formats import Wan21

        latent_length = _latent_frames(length)
        if control_video is not None:
            control_video = _fit(control_video[:length], width, height)
            if control_video.shape[0] < length:
                control_video = F.pad(control_video, (0, 0, 0, 0, 0, 0, 0, length - control_video.shape[0]), value=0.5)
        else:
            control_video = torch.ones((length, height, width, 3)) * 0.5
        if reference_image is not None:
            reference_image = vae.encode(_fit(reference_image[:1], width, height)[:, :, :, :3])
            reference_image = torch.cat([reference_image, Wan21().process_out(torch.zeros_like(reference_image))],
                                        dim=1)
        if control_masks is None:
            mask = torch.ones((length, height, width, 1))
        else:
            mask = control_masks.unsqueeze(1) if control_masks.ndim == 3 else control_masks
            from comfy_kernel.nodes.resize import common_upscale

            mask = common_upscale(mask[:length], width, height, "bilinear", "center").movedim(1, -1)
            if mask.shape[0] < length:
                mask = F.pad(mask, (0, 0, 0, 0, 0, 0, 0, length - mask.shape[0]), value=1.0)
        control_video = control_video - 0.5
        inactive = vae.encode(((control_video * (1 - mask)) + 0.5)[:, :, :, :3])
        reactive = vae.encode(((control_video * mask) + 0.5)[:, :, :, :3])
        frames = torch.cat((inactive, reactive), dim=1)
        if reference_image is not None:
            frames = torch.cat((reference_image, frames), dim=2)

        stride = 8
        hm, wm = height // stride, width // stride
        mask = mask.reshape(length, hm, stride, wm, stride).permute(2, 4, 0, 1, 3)
        mask = mask.reshape(stride * stride, length, hm, wm)
        mask = F.interpolate(mask.unsqueeze(0), size=(latent_length, hm, wm), mode="nearest-exact").squeeze(0)
        trim = 0
        if reference_image is not None:
            mask = torch.cat((torch.zeros_like(mask[:, : reference_image.shape[2]]), mask), dim=1)
            latent_length += reference_image.shape[2]
            trim = reference_image.shape[2]
        values = {"vace_frames": [frames], "vace_mask": [mask.unsqueeze(0)], "vace_strength": [strength]}
        positive, negative = _with(positive, values, append=True), _with(negative, values, append=True)
        latent = torch.zeros([batch_size, 16, latent_length, hm, wm])
        return io.NodeOutput(positive, negative, {"samples": latent}, trim)


class TrimVideoLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="TrimVideoLatent", category="latent/video", inputs=[
            io.Latent.Input("samples"), io.Int.Input("trim_amount", default=0, min=0, max=99999),
        ], outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, samples, trim_amount) -> io.NodeOutput:
        out = dict(samples)
        out["samples"] = samples["samples"][:, :, trim_amount:]
        return io.NodeOutput(out)


class WanPhantomSubjectToVideo(io.ComfyNode):
    """Phantom (subject to video): each subject image encoded on its own, appended after the video's frames.

    The model sees the subjects as extra latent frames (``time_dim_concat``)
    and returns only the video's. Two negatives come out: one with the
    subjects (``negative_text``: the images kept, only the text negated) and
    one with a blank in their place (``negative_img_text``: both negated).
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="WanPhantomSubjectToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            io.Int.Input("width", default=832, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("height", default=480, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("length", default=81, min=1, max=MAX_RESOLUTION, step=4),
            io.Int.Input("batch_size", default=1, min=1, max=4096),
            io.Image.Input("images", optional=True),
        ], outputs=[io.Conditioning.Output(display_name="positive"),
                    io.Conditioning.Output(display_name="negative_text"),
                    io.Conditioning.Output(display_name="negative_img_text"),
                    io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, images=None) -> io.NodeOutput:
        import torch

        from ...model.latent_formats import Wan21

        latent = torch.zeros([batch_size, 16, _latent_frames(length), height // 8, width // 8])
        negative_text = negative
        if images is not None:
            images = _fit(images[:length], width, height)
            subjects = torch.cat([vae.encode(image[None, :, :, :3]) for image in images], dim=2)
            positive = _with(positive, {"time_dim_concat": subjects})
            negative_text = _with(negative, {"time_dim_concat": subjects})
            negative = _with(negative, {"time_dim_concat": Wan21().process_out(torch.zeros_like(subjects))})
        return io.NodeOutput(positive, negative_text, negative, {"samples": latent})


class ClipVisionStates:
    """A CLIP_VISION_OUTPUT holding only ``penultimate_hidden_states`` (two images' tokens joined)."""

    def __init__(self, penultimate_hidden_states: Any) -> None:
        self.penultimate_hidden_states = penultimate_hidden_states

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def first_last_frame(positive: list, negative: list, vae: Any, width: int, height: int, length: int,
                     batch_size: int, start_image: Any = None, end_image: Any = None,
                     clip_start: Any = None, clip_end: Any = None) -> tuple:
    """Start / end frames encoded between grey frames, their latent frames kept; CLIP tokens of both joined."""
    import torch

    scale = vae.spacial_compression_encode()
    latent = torch.zeros([batch_size, vae.latent_channels, _latent_frames(length), height // scale, width // scale])
    image = torch.ones((length, height, width, 3)) * 0.5
    mask = torch.ones((1, 1, latent.shape[2] * 4, latent.shape[-2], latent.shape[-1]))
    if start_image is not None:
        start_image = _fit(start_image[:length], width, height)
        image[: start_image.shape[0]] = start_image[..., :3]
        mask[:, :, : start_image.shape[0] + 3] = 0.0
    if end_image is not None:
        end_image = _fit(end_image[-length:], width, height)
        image[-end_image.shape[0]:] = end_image[..., :3]
        mask[:, :, -end_image.shape[0]:] = 0.0
    concat = vae.encode(image)
    mask = mask.view(1, mask.shape[2] // 4, 4, mask.shape[3], mask.shape[4]).transpose(1, 2)
    values = {"concat_latent_image": concat, "concat_mask": mask}
    positive, negative = _with(positive, values), _with(negative, values)
    clip = clip_start
    if clip_end is not None:
        clip = clip_end if clip is None else ClipVisionStates(torch.cat(
            [clip.penultimate_hidden_states, clip_end.penultimate_hidden_states], dim=-2))
    if clip is not None:
        positive, negative = _with(positive, {"clip_vision_output": clip}), _with(negative, {"clip_vision_output": clip})
    return positive, negative, {"samples": latent}


def _video_inputs(width: int = 832, height: int = 480, length: int = 81) -> list:
    return [
        io.Int.Input("width", default=width, min=16, max=MAX_RESOLUTION, step=16),
        io.Int.Input("height", default=height, min=16, max=MAX_RESOLUTION, step=16),
        io.Int.Input("length", default=length, min=1, max=MAX_RESOLUTION, step=4),
        io.Int.Input("batch_size", default=1, min=1, max=4096),
    ]


def _video_outputs() -> list:
    return [io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
            io.Latent.Output(display_name="latent")]


class WanFirstLastFrameToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="WanFirstLastFrameToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            *_video_inputs(),
            io.ClipVisionOutput.Input("clip_vision_start_image", optional=True),
            io.ClipVisionOutput.Input("clip_vision_end_image", optional=True),
            io.Image.Input("start_image", optional=True), io.Image.Input("end_image", optional=True),
        ], outputs=_video_outputs())

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, start_image=None,
                end_image=None, clip_vision_start_image=None, clip_vision_end_image=None) -> io.NodeOutput:
        return io.NodeOutput(*first_last_frame(positive, negative, vae, width, height, length, batch_size,
                                               start_image, end_image, clip_vision_start_image,
                                               clip_vision_end_image))


class WanFunInpaintToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="WanFunInpaintToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            *_video_inputs(),
            io.ClipVisionOutput.Input("clip_vision_output", optional=True),
            io.Image.Input("start_image", optional=True), io.Image.Input("end_image", optional=True),
        ], outputs=_video_outputs())

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, start_image=None,
                end_image=None, clip_vision_output=None) -> io.NodeOutput:
        return io.NodeOutput(*first_last_frame(positive, negative, vae, width, height, length, batch_size,
                                               start_image, end_image, clip_vision_output))



def _empty_concat(batch_size: int, channels: int, frames: int, h: int, w: int) -> Any:
    """Two latents' worth of channels that decode to black (zero raw latents, normalised)."""
    import torch

    from ...model.latent_formats import Wan21, Wan22

    zeros = torch.zeros([batch_size, channels, frames, h, w])
    return (Wan22() if channels == 48 else Wan21()).process_out(zeros).repeat(1, 2, 1, 1, 1)


class WanFunControlToVideo(io.ComfyNode):
    """Fun-Control 2.1: control video latents in the first 16 extra channels, start image in the next 16."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="WanFunControlToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            *_video_inputs(),
            io.ClipVisionOutput.Input("clip_vision_output", optional=True),
            io.Image.Input("start_image", optional=True), io.Image.Input("control_video", optional=True),
        ], outputs=_video_outputs())

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, start_image=None,
                clip_vision_output=None, control_video=None) -> io.NodeOutput:
        import torch

        frames = _latent_frames(length)
        latent = torch.zeros([batch_size, 16, frames, height // 8, width // 8])
        concat = _empty_concat(batch_size, 16, frames, height // 8, width // 8)
        if start_image is not None:
            encoded = vae.encode(_fit(start_image[:length], width, height)[:, :, :, :3])
            concat[:, 16:, : encoded.shape[2]] = encoded[:, :, : concat.shape[2]]
        if control_video is not None:
            encoded = vae.encode(_fit(control_video[:length], width, height)[:, :, :, :3])
            concat[:, :16, : encoded.shape[2]] = encoded[:, :, : concat.shape[2]]
        positive = _with(positive, {"concat_latent_image": concat})
        negative = _with(negative, {"concat_latent_image": concat})
        if clip_vision_output is not None:
            values = {"clip_vision_output": clip_vision_output}
            positive, negative = _with(positive, values), _with(negative, values)
        return io.NodeOutput(positive, negative, {"samples": latent})


class Wan22FunControlToVideo(io.ComfyNode):
    """Fun-Control 2.2: control video latents, the mask after them, a reference image's latent as tokens."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="Wan22FunControlToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            *_video_inputs(),
            io.Image.Input("ref_image", optional=True), io.Image.Input("control_video", optional=True),
        ], outputs=_video_outputs())

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, ref_image=None,
                start_image=None, control_video=None) -> io.NodeOutput:
        import torch

        scale, channels = vae.spacial_compression_encode(), vae.latent_channels
        frames = _latent_frames(length)
        latent = torch.zeros([batch_size, channels, frames, height // scale, width // scale])
        concat = _empty_concat(batch_size, channels, frames, height // scale, width // scale)
        mask = torch.ones((1, 1, frames * 4, latent.shape[-2], latent.shape[-1]))
        if start_image is not None:
            start_image = _fit(start_image[:length], width, height)
            encoded = vae.encode(start_image[:, :, :, :3])
            concat[:, channels:, : encoded.shape[2]] = encoded[:, :, : concat.shape[2]]
            mask[:, :, : start_image.shape[0] + 3] = 0.0
        reference = None
        if ref_image is not None:
            reference = vae.encode(_fit(ref_image[:1], width, height)[:, :, :, :3])
        if control_video is not None:
            encoded = vae.encode(_fit(control_video[:length], width, height)[:, :, :, :3])
            concat[:, :channels, : encoded.shape[2]] = encoded[:, :, : concat.shape[2]]
        mask = mask.view(1, mask.shape[2] // 4, 4, mask.shape[3], mask.shape[4]).transpose(1, 2)
        values = {"concat_latent_image": concat, "concat_mask": mask, "concat_mask_index": channels}
        positive, negative = _with(positive, values), _with(negative, values)
        if reference is not None:
            values = {"reference_latents": [reference]}
            positive, negative = _with(positive, values, append=True), _with(negative, values, append=True)
        return io.NodeOutput(positive, negative, {"samples": latent})


class WanCameraEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from .camera_presets import PRESETS

        return io.Schema(node_id="WanCameraEmbedding", category="camera", inputs=[
            io.Combo.Input("camera_pose", options=list(PRESETS), default="Static"),
            *_video_inputs()[:3],
            io.Float.Input("speed", default=1.0, min=0, max=10.0, step=0.1, optional=True),
            io.Float.Input("fx", default=0.5, min=0, max=1, step=0.000000001, optional=True),
            io.Float.Input("fy", default=0.5, min=0, max=1, step=0.000000001, optional=True),
            io.Float.Input("cx", default=0.5, min=0, max=1, step=0.01, optional=True),
            io.Float.Input("cy", default=0.5, min=0, max=1, step=0.01, optional=True),
        ], outputs=[CAMERA_EMBEDDING.Output(display_name="camera_embedding"), io.Int.Output(display_name="width"),
                    io.Int.Output(display_name="height"), io.Int.Output(display_name="length")])

    @classmethod
    def execute(cls, camera_pose, width, height, length, speed=1.0, fx=0.5, fy=0.5, cx=0.5,
                cy=0.5) -> io.NodeOutput:
        from .camera import camera_embedding

        embedding = camera_embedding(camera_pose, width, height, length, speed, fx, fy, cx, cy)
        return io.NodeOutput(embedding, width, height, length)


class WanCameraImageToVideo(io.ComfyNode):
    """Fun camera: start-image latents (zero latents elsewhere) with their mask, and the camera embedding."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="WanCameraImageToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            *_video_inputs(),
            io.ClipVisionOutput.Input("clip_vision_output", optional=True),
            io.Image.Input("start_image", optional=True),
            CAMERA_EMBEDDING.Input("camera_conditions", optional=True),
        ], outputs=_video_outputs())

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, start_image=None,
                clip_vision_output=None, camera_conditions=None) -> io.NodeOutput:
        import torch

        from ...model.latent_formats import Wan21

        frames = _latent_frames(length)
        latent = torch.zeros([batch_size, 16, frames, height // 8, width // 8])
        if start_image is not None:
            concat = Wan21().process_out(torch.zeros_like(latent))
            start_image = _fit(start_image[:length], width, height)
            encoded = vae.encode(start_image[:, :, :, :3])
            concat[:, :, : encoded.shape[2]] = encoded[:, :, : frames]
            mask = torch.ones((1, 1, frames * 4, latent.shape[-2], latent.shape[-1]))
            mask[:, :, : start_image.shape[0] + 3] = 0.0
            mask = mask.view(1, frames, 4, mask.shape[3], mask.shape[4]).transpose(1, 2)
            values = {"concat_latent_image": concat, "concat_mask": mask}
            positive, negative = _with(positive, values), _with(negative, values)
        for key, value in (("camera_conditions", camera_conditions), ("clip_vision_output", clip_vision_output)):
            if value is not None:
                positive, negative = _with(positive, {key: value}), _with(negative, {key: value})
        return io.NodeOutput(positive, negative, {"samples": latent})


NODES = [
    NodeDef("EmptyHunyuanLatentVideo", EmptyHunyuanLatentVideo, "EmptyHunyuanLatentVideo",
            "comfy_extras.nodes_hunyuan"),
    NodeDef("WanImageToVideo", WanImageToVideo, None, MODULE),
    NodeDef("Wan22ImageToVideoLatent", Wan22ImageToVideoLatent, None, MODULE),
    NodeDef("WanVaceToVideo", WanVaceToVideo, None, MODULE),
    NodeDef("TrimVideoLatent", TrimVideoLatent, None, MODULE),
    NodeDef("WanFirstLastFrameToVideo", WanFirstLastFrameToVideo, None, MODULE),
    NodeDef("WanFunInpaintToVideo", WanFunInpaintToVideo, None, MODULE),
    NodeDef("WanFunControlToVideo", WanFunControlToVideo, None, MODULE),
    NodeDef("Wan22FunControlToVideo", Wan22FunControlToVideo, None, MODULE),
    NodeDef("WanCameraImageToVideo", WanCameraImageToVideo, None, MODULE),
    NodeDef("WanCameraEmbedding", WanCameraEmbedding, None, "comfy_extras.nodes_camera_trajectory"),
    NodeDef("WanSoundImageToVideo", WanSoundImageToVideo, None, MODULE),
    NodeDef("WanSoundImageToVideoExtend", WanSoundImageToVideoExtend, None, MODULE),
    NodeDef("WanHuMoImageToVideo", WanHuMoImageToVideo, None, MODULE),
    NodeDef("WanTrackToVideo", WanTrackToVideo, None, MODULE),
    NodeDef("WanPhantomSubjectToVideo", WanPhantomSubjectToVideo, None, MODULE),
    NodeDef("WanAnimateToVideo", WanAnimateToVideo, None, MODULE),
    NodeDef("WanInfiniteTalkToVideo", WanInfiniteTalkToVideo, None, MODULE),
    *(NodeDef(cls.__name__, cls, None, "comfy_extras.nodes_wanmove")
      for cls in (WanMoveTrackToVideo, WanMoveTracksFromCoords, WanMoveConcatTrack, WanMoveVisualizeTracks,
                  GenerateTracks)),
    NodeDef("AudioEncoderLoader", AudioEncoderLoader, None, "comfy_extras.nodes_audio_encoder"),
    NodeDef("AudioEncoderEncode", AudioEncoderEncode, None, "comfy_extras.nodes_audio_encoder"),
]
