"""Wan 2.2 Animate's node (comfy_extras.nodes_wan ``WanAnimateToVideo``): a character driven by pose and face videos.

The I2V channels get the reference image's latents followed by a video's:
grey, or the background video, with the frames of ``continue_motion`` (the
end of the previous chunk) first. The mask keeps the reference frames and
the continued frames and follows ``character_mask`` elsewhere (1: generate).
The pose video's latents go in as ``pose_video_latent``, the face video as
512x512 crops in -1..1 (``face_video_pixels``, all -1 for the negative
prompt). ``video_frame_offset`` seeks into every input video, so chunks of
a long video chain through the node's last output. All resizing is ComfyUI's
"area" with a centre crop (the mask: nearest).

``nodes.py`` lists the node; this module imports nothing of the node
package at its top (importing that package collects every family's nodes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from comfy_kernel.nodes import io

if TYPE_CHECKING:  # the node list is read at start-up, before torch is imported
    import torch

#: the face crops' size
FACE_SIZE = 512
VIDEO_OFFSET_TOOLTIP = ("The amount of frames to seek in all the input videos. Used for generating longer videos "
                        "by chunk. Connect to the video_frame_offset output of the previous node for extending a "
                        "video.")


def _area(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Images [n, H, W, C] resized by area averaging after a centre crop to the target's aspect."""
    from comfy_kernel.nodes.resize import common_upscale

    return common_upscale(images.movedim(-1, 1), width, height, "area", "center").movedim(1, -1)


def _seek(video: torch.Tensor | None, offset: int) -> torch.Tensor | None:
    """The frames from ``offset`` on; None where the video ends before it."""
    if video is None or video.shape[0] <= offset:
        return None
    return video[offset:]


def character_frames(mask: torch.Tensor, offset: int, length: int, width: int, height: int) -> torch.Tensor | None:
    """The character mask's frames from ``offset`` (a single frame serves every frame) at latent size:
    [1, 1, frames, height, width], nearest-exact; None where the mask ends before ``offset``."""
    from comfy_kernel.nodes.resize import common_upscale

    if mask.shape[0] == 1:
        mask = mask.repeat((length,) + (1,) * (mask.ndim - 1))
    elif mask.shape[0] > offset:
        mask = mask[offset:]
    else:
        return None
    frames = mask[:length].reshape(-1, 1, *mask.shape[-2:])
    return common_upscale(frames, width, height, "nearest-exact", "center").movedim(0, 1).unsqueeze(0)


class WanAnimateToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ...nodes.common import MAX_RESOLUTION

        return io.Schema(node_id="WanAnimateToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            io.Int.Input("width", default=832, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("height", default=480, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("length", default=77, min=1, max=MAX_RESOLUTION, step=4),
            io.Int.Input("batch_size", default=1, min=1, max=4096),
            io.ClipVisionOutput.Input("clip_vision_output", optional=True),
            io.Image.Input("reference_image", optional=True),
            io.Image.Input("face_video", optional=True),
            io.Image.Input("pose_video", optional=True),
            io.Int.Input("continue_motion_max_frames", default=5, min=1, max=MAX_RESOLUTION, step=4),
            io.Image.Input("background_video", optional=True),
            io.Mask.Input("character_mask", optional=True),
            io.Image.Input("continue_motion", optional=True),
            io.Int.Input("video_frame_offset", default=0, min=0, max=MAX_RESOLUTION, step=1,
                         tooltip=VIDEO_OFFSET_TOOLTIP),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent"), io.Int.Output(display_name="trim_latent"),
                    io.Int.Output(display_name="trim_image"), io.Int.Output(display_name="video_frame_offset")],
            is_experimental=True)

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, continue_motion_max_frames,
                video_frame_offset, reference_image=None, clip_vision_output=None, face_video=None,
                pose_video=None, continue_motion=None, background_video=None,
                character_mask=None) -> io.NodeOutput:
        import torch

        from .nodes import _latent_frames, _with

        frames = _latent_frames(length)
        if reference_image is None:
            reference_image = torch.zeros((1, height, width, 3))
        ref_latent = vae.encode(_area(reference_image[:length], width, height)[..., :3])
        ref_frames = ref_latent.shape[2]

        video = torch.full((length, height, width, 3), 0.5)
        kept = 0  # latent frames of the continued clip
        if continue_motion is not None:
            continue_motion = continue_motion[-continue_motion_max_frames:]
            video_frame_offset = max(0, video_frame_offset - continue_motion.shape[0])
            continue_motion = _area(continue_motion[-length:], width, height)
            video = torch.full((length, height, width, continue_motion.shape[-1]), 0.5, dtype=continue_motion.dtype)
            video[: continue_motion.shape[0]] = continue_motion
            kept = _latent_frames(continue_motion.shape[0])

        if clip_vision_output is not None:
            positive = _with(positive, {"clip_vision_output": clip_vision_output})
            negative = _with(negative, {"clip_vision_output": clip_vision_output})

        pose_video = _seek(pose_video, video_frame_offset)
        if pose_video is not None:
            pose_video = _area(pose_video[:length], width, height)
            if pose_video.shape[0] < length:  # the last pose held
                pose_video = torch.cat([pose_video, pose_video[-1:].expand(length - pose_video.shape[0],
                                                                           *pose_video.shape[1:])])
            pose_latent = vae.encode(pose_video[..., :3])
            positive = _with(positive, {"pose_video_latent": pose_latent})
            negative = _with(negative, {"pose_video_latent": pose_latent})

        face_video = _seek(face_video, video_frame_offset)
        if face_video is not None:
            from comfy_kernel.nodes.resize import common_upscale

            faces = common_upscale(face_video[:length].movedim(-1, 1), FACE_SIZE, FACE_SIZE, "area", "center")
            faces = (faces * 2.0 - 1.0).movedim(0, 1).unsqueeze(0)
            positive = _with(positive, {"face_video_pixels": faces})
            negative = _with(negative, {"face_video_pixels": torch.full_like(faces, -1.0)})

        kept_images = max(0, kept * 4 - 3)
        background = _seek(background_video, video_frame_offset)
        if background is not None:
            background = _area(background[:length], width, height)
            if background.shape[0] > kept_images:
                video[kept_images: background.shape[0]] = background[kept_images:]

        h, w = ref_latent.shape[-2:]
        generate = torch.ones((1, 1, frames * 4, h, w), dtype=ref_latent.dtype)
        generate[:, :, : kept * 4] = 0.0
        if character_mask is not None:
            character = character_frames(character_mask, video_frame_offset, length, w, h)
            if character is not None and character.shape[2] > kept_images:
                generate[:, :, kept_images: character.shape[2]] = character[:, :, kept_images:]

        concat = torch.cat([ref_latent, vae.encode(video[..., :3])], dim=2)
        generate = generate.view(1, frames, 4, h, w).transpose(1, 2)
        mask = torch.cat([torch.zeros((1, 4, ref_frames, h, w), dtype=ref_latent.dtype), generate], dim=2)
        positive = _with(positive, {"concat_latent_image": concat, "concat_mask": mask})
        negative = _with(negative, {"concat_latent_image": concat, "concat_mask": mask})

        latent = torch.zeros([batch_size, 16, frames + ref_frames, height // 8, width // 8])
        return io.NodeOutput(positive, negative, {"samples": latent}, ref_frames, kept_images,
                             video_frame_offset + length)
