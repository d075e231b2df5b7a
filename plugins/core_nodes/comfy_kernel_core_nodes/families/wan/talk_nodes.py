"""InfiniteTalk's node (comfy_extras.nodes_wan ``WanInfiniteTalkToVideo``): speech-driven Wan 2.1 I2V.

The wav2vec2 states of each speaker (all layers but the first, 50 a second)
are resampled to 25 a second; with two speakers the sounds follow each
other (the first speaks, then the second: each is zero while the other
talks) and each speaker's mask picks the first-frame tokens of that person.
The node turns the states of the video's frames into audio tokens with the
patch's projection, puts them in the model's transformer options, and adds
the patch's audio attention to every block (``multitalk.py``). The start
image conditions the model as in WanImageToVideo. The first latent frame
(or, extending a video, the latents of its last ``motion_frame_count``
frames) is held fixed while sampling; ``trim_image`` tells how many frames
of the decoded result repeat the previous video.

``nodes.py`` lists the node; this module imports nothing of the node
package at its top (importing that package collects every family's nodes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from comfy_kernel.nodes import io

if TYPE_CHECKING:  # the node list is read at start-up, before torch is imported
    import torch


def speaker_states(encoder_output: dict[str, Any]) -> torch.Tensor:
    """[frames at 25 a second, layers - 1, C]: the wav2vec2 states after its feature projection, resampled."""
    import torch

    from .humo_nodes import resample_rate

    states = torch.stack(list(encoder_output["encoded_audio_all_layers"]), dim=0).squeeze(1)[1:]
    return resample_rate(states, 50, 25).movedim(0, 1)


def one_after_another(states: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each speaker's states placed in turn on one shared timeline, zeros elsewhere."""
    import torch

    if len(states) < 2:
        return states
    total = sum(s.shape[0] for s in states)
    out, offset = [], 0
    for s in states:
        full = torch.zeros(total, *s.shape[1:], dtype=s.dtype)
        full[offset:offset + s.shape[0]] = s
        out.append(full)
        offset += s.shape[0]
    return out


class WanInfiniteTalkToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ...nodes.common import MAX_RESOLUTION

        two = [io.AudioEncoderOutput.Input("audio_encoder_output_2", optional=True),
               io.Mask.Input("mask_1", optional=True, tooltip="The first speaker's area (needed with two sounds)."),
               io.Mask.Input("mask_2", optional=True, tooltip="The second speaker's area (needed with two sounds).")]
        return io.Schema(node_id="WanInfiniteTalkToVideo", category="conditioning/video_models", inputs=[
            io.DynamicCombo.Input("mode", options=[io.DynamicCombo.Option("single_speaker", []),
                                                   io.DynamicCombo.Option("two_speakers", two)]),
            io.Model.Input("model"), io.ModelPatch.Input("model_patch"),
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            io.Int.Input("width", default=832, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("height", default=480, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("length", default=81, min=1, max=MAX_RESOLUTION, step=4),
            io.ClipVisionOutput.Input("clip_vision_output", optional=True),
            io.Image.Input("start_image", optional=True),
            io.AudioEncoderOutput.Input("audio_encoder_output_1"),
            io.Int.Input("motion_frame_count", default=9, min=1, max=33, step=1, advanced=True,
                         tooltip="How many frames of the previous video continue into this one."),
            io.Float.Input("audio_scale", default=1.0, min=-10.0, max=10.0, step=0.01),
            io.Image.Input("previous_frames", optional=True),
        ], outputs=[io.Model.Output(display_name="model"), io.Conditioning.Output(display_name="positive"),
                    io.Conditioning.Output(display_name="negative"), io.Latent.Output(display_name="latent"),
                    io.Int.Output(display_name="trim_image")])

    @classmethod
    def execute(cls, mode, model, model_patch, positive, negative, vae, width, height, length,
                audio_encoder_output_1, motion_frame_count, start_image=None, previous_frames=None,
                audio_scale=1.0, clip_vision_output=None, audio_encoder_output_2=None, mask_1=None,
                mask_2=None) -> io.NodeOutput:
        import torch
        import torch.nn.functional as F

        from ...model.extension import WrappersMP
        from ...model.model_patch import MULTITALK
        from ...nodes.model_patch import _require
        from .multitalk import MotionFramesWrapper, MultiTalkAttnMapPatch, MultiTalkAudioPatch, audio_tokens
        from .nodes import _fit, _latent_frames, _with, start_latents

        _require(model_patch, (MULTITALK,), "WanInfiniteTalkToVideo")
        if previous_frames is not None and previous_frames.shape[0] < motion_frame_count:
            raise ValueError("WanInfiniteTalkToVideo: fewer previous frames than motion_frame_count")
        if isinstance(mode, dict) and mode.get("mode") == "two_speakers":
            audio_encoder_output_2, mask_1, mask_2 = (mode.get(k) for k in
                                                      ("audio_encoder_output_2", "mask_1", "mask_2"))
        if audio_encoder_output_2 is not None and (mask_1 is None or mask_2 is None):
            raise ValueError("WanInfiniteTalkToVideo: two sounds need both speakers' masks")
        masks = None
        if mask_1 is not None and mask_2 is not None:
            if audio_encoder_output_2 is None:
                raise ValueError("WanInfiniteTalkToVideo: two masks need the second speaker's sound")
            masks = torch.cat([mask_1, mask_2])

        latent = torch.zeros([1, 16, _latent_frames(length), height // 8, width // 8])
        concat = None
        if start_image is not None:
            concat, mask = start_latents(vae, start_image, width, height, length)
            values = {"concat_latent_image": concat, "concat_mask": mask}
            positive, negative = _with(positive, values), _with(negative, values)
        if clip_vision_output is not None:
            positive = _with(positive, {"clip_vision_output": clip_vision_output})
            negative = _with(negative, {"clip_vision_output": clip_vision_output})

        states = one_after_another([speaker_states(o) for o in (audio_encoder_output_1, audio_encoder_output_2)
                                    if o is not None])
        if previous_frames is not None:
            motion = _fit(previous_frames[-motion_frame_count:], width, height)
            start_frame = previous_frames.shape[0] - motion_frame_count
            motion_latent = vae.encode(motion[..., :3])
            trim = motion_frame_count
        else:
            if concat is None:
                raise ValueError("WanInfiniteTalkToVideo needs a start_image or previous_frames")
            start_frame = trim = 0
            motion_latent = concat[:, :, :1]

        patched = model.clone()
        with model_patch.use() as holder, torch.no_grad():
            proj = holder.loaded_module.audio_proj
            device = proj.proj1.weight.device
            embeds = audio_tokens(proj, [s.to(device) for s in states], start_frame, start_frame + length)
        patched.model_options["transformer_options"]["audio_embeds"] = embeds.to(patched.model_dtype())
        patched.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, "infinite_talk_outer_sample",
                                     MotionFramesWrapper(motion_latent, model_patch, previous_frames is not None))
        patched.set_model_patch(MultiTalkAudioPatch(model_patch, audio_scale), "attn2_patch")
        if masks is not None:
            tokens = F.interpolate(masks.unsqueeze(0).float(), size=(latent.shape[-2] // 2, latent.shape[-1] // 2),
                                   mode="nearest")[0]
            patched.set_model_patch(MultiTalkAttnMapPatch((tokens > 0).view(tokens.shape[0], -1)), "attn1_patch")
        return io.NodeOutput(patched, positive, negative, {"samples": latent}, trim)
