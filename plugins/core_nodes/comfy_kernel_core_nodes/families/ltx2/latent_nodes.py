"""LTX-2's latent nodes: the audio + video latent joined and split (ComfyUI's comfy_extras.nodes_lt) and the
latent upsampler run on it (comfy_extras.nodes_lt_upsampler).

``LTXVConcatAVLatent`` / ``LTXVSeparateAVLatent`` build and split the nested
tensor (``model/nested.py``) the sampler packs; ``LTXVLatentUpsampler`` runs an
LTX latent upsampler (``upsampler.py``) in the video VAE's un-normalised units.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io


def fit_audio(reference: Any, audio: Any, mask: Any) -> tuple[Any, Any]:
    """``audio`` cut or zero-padded along the one axis where it differs from ``reference`` (its mask likewise,
    padded with ones: the added tail is generated)."""
    import torch

    from ...sampling.guider import reshape_mask

    axes = [i for i in range(reference.ndim) if reference.shape[i] != audio.shape[i]]
    if not axes:
        return audio, mask
    if len(axes) > 1 or axes[0] < 2:
        raise ValueError(f"audio latent {tuple(audio.shape)} cannot be fitted to {tuple(reference.shape)}")
    axis, length = axes[0], reference.shape[axes[0]]
    if mask is not None:
        mask = reshape_mask(mask, audio.shape)
    if audio.shape[axis] > length:
        return audio.narrow(axis, 0, length), None if mask is None else mask.narrow(axis, 0, length)
    pad = list(audio.shape)
    pad[axis] = length - audio.shape[axis]
    audio = torch.cat([audio, audio.new_zeros(pad)], dim=axis)
    return audio, None if mask is None else torch.cat([mask, mask.new_ones(pad)], dim=axis)


class LTXVConcatAVLatent(io.ComfyNode):
    """A video and an audio latent as one LTX-2 latent; a noise mask on either gives both one."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVConcatAVLatent", display_name="Concat AV Latent",
                         category="model/latent/ltxv",
                         description="Merge a video latent and an audio latent into a joint AV latent.",
                         inputs=[io.Latent.Input("video_latent"), io.Latent.Input("audio_latent")],
                         outputs=[io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, video_latent, audio_latent) -> io.NodeOutput:
        import torch

        from ...model.nested import NestedTensor, is_nested

        out = {**video_latent, **audio_latent}
        video, audio = video_latent["samples"], audio_latent["samples"]
        video_mask, audio_mask = video_latent.get("noise_mask"), audio_latent.get("noise_mask")
        if is_nested(video):  # an AV latent already: its audio is replaced, fitted to its length
            old_audio = video.unbind()[1]
            video = video.unbind()[0]
            video_mask = video_mask.unbind()[0] if video_mask is not None else None
            audio, audio_mask = fit_audio(old_audio, audio, audio_mask)
        if video_mask is not None or audio_mask is not None:
            out["noise_mask"] = NestedTensor((torch.ones_like(video) if video_mask is None else video_mask,
                                              torch.ones_like(audio) if audio_mask is None else audio_mask))
        out["samples"] = NestedTensor((video, audio))
        return io.NodeOutput(out)


class LTXVSeparateAVLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVSeparateAVLatent", display_name="Separate AV Latent",
                         category="model/latent/ltxv",
                         description="Split a joint AV latent into its video and audio latents.",
                         inputs=[io.Latent.Input("av_latent")],
                         outputs=[io.Latent.Output(display_name="video_latent"),
                                  io.Latent.Output(display_name="audio_latent")])

    @classmethod
    def execute(cls, av_latent) -> io.NodeOutput:
        video, audio = av_latent["samples"].unbind()[:2]
        video_latent, audio_latent = {**av_latent, "samples": video}, {**av_latent, "samples": audio}
        masks = av_latent.get("noise_mask")
        if masks is not None:
            video_latent["noise_mask"], audio_latent["noise_mask"] = masks.unbind()[:2]
        return io.NodeOutput(video_latent, audio_latent)


class LTXVLatentUpsampler(io.ComfyNode):
    """The latent through an LTX latent upsampler, in the VAE's un-normalised units (its statistics undone and
    redone around the model); the noise mask is dropped."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LTXVLatentUpsampler", category="model/latent/ltxv", is_experimental=True,
                         inputs=[io.Latent.Input("samples"), io.Custom("LATENT_UPSCALE_MODEL").Input("upscale_model"),
                                 io.Vae.Input("vae")],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, samples, upscale_model, vae) -> io.NodeOutput:
        if not hasattr(upscale_model, "upsample"):
            raise ValueError("LTXVLatentUpsampler takes an LTX latent upsampler (Load Latent Upscale Model)")
        if not hasattr(vae, "statistics"):
            raise ValueError("LTXVLatentUpsampler needs the LTX-2 video VAE (its latent statistics)")
        latent = samples["samples"]
        mean, std = vae.statistics()
        upsampled = upscale_model.upsample(latent.float() * std + mean)
        out = {k: v for k, v in samples.items() if k != "noise_mask"}
        out["samples"] = ((upsampled - mean) / std).to(latent.dtype)
        return io.NodeOutput(out)
