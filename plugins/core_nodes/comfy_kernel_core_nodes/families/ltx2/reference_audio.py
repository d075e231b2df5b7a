"""LTXVReferenceAudio (ComfyUI's comfy_extras.nodes_lt): a speaker's voice for LTX-2.3's ID-LoRA.

The reference clip is encoded by the audio VAE and rides in both conditionings
as ``ref_audio`` tokens; the transformer runs them ahead of the generated audio
at timestep 0, placed just before it in time (``LTX2Transformer.audio_coords``),
and returns no velocity for them. Identity guidance then adds, where sigma is
within the chosen range, ``scale`` times the difference between the positive
prediction with the reference and without it: one more model pass a step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from comfy_kernel.nodes import io

if TYPE_CHECKING:
    import torch


class LTXVReferenceAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LTXVReferenceAudio", display_name="LTXV Reference Audio (ID-LoRA)",
            category="model/conditioning/ltxv",
            description="A speaker's reference clip for an ID-LoRA: encoded into both conditionings, with identity "
                        "guidance patched into the model (one more pass a step without the reference).",
            inputs=[io.Model.Input("model"), io.Conditioning.Input("positive"), io.Conditioning.Input("negative"),
                    io.Audio.Input("reference_audio", tooltip="The voice to carry over; the ID-LoRAs were trained "
                                                              "on clips of about five seconds."),
                    io.Vae.Input(id="audio_vae", display_name="Audio VAE", tooltip="The LTX audio VAE."),
                    io.Float.Input("identity_guidance_scale", default=3.0, min=0.0, max=100.0, step=0.01,
                                   round=0.01, tooltip="0 runs no extra pass (the reference still conditions)."),
                    io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001, advanced=True),
                    io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001, advanced=True)],
            outputs=[io.Model.Output(), io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative")])

    @classmethod
    def execute(cls, model, positive, negative, reference_audio, audio_vae, identity_guidance_scale: float,
                start_percent: float, end_percent: float) -> io.NodeOutput:
        from ...nodes.audio import VAEEncodeAudio
        from ...nodes.conditioning_area import set_values

        (latent,) = VAEEncodeAudio().encode(reference_audio, audio_vae)
        samples = latent["samples"]
        if samples.ndim != 4:
            raise ValueError(f"LTXVReferenceAudio needs an LTX audio VAE (latents [batch, channels, frames, bins]); "
                             f"this VAE gave {list(samples.shape)}")
        b, c, t, f = samples.shape
        ref_audio = {"tokens": samples.permute(0, 2, 1, 3).reshape(b, t, c * f)}
        m = model.clone()
        sampling = m.get_model_object("model_sampling")
        m.set_model_sampler_post_cfg_function(identity_guidance(
            identity_guidance_scale, sampling.percent_to_sigma(start_percent),
            sampling.percent_to_sigma(end_percent)))
        return io.NodeOutput(m, set_values(positive, {"ref_audio": ref_audio}),
                             set_values(negative, {"ref_audio": ref_audio}))


def identity_guidance(scale: float, sigma_start: float, sigma_end: float) -> Callable[[dict[str, Any]], torch.Tensor]:
    """Post-CFG: ``denoised + scale * (positive - positive without ref_audio)`` for sigma_end < sigma <= sigma_start
    (the first sample's sigma decides, as in ComfyUI)."""
    from ...sampling.guider import calc_cond_batch

    def post_cfg(args: dict[str, Any]) -> torch.Tensor:
        denoised, sigma = args["denoised"], args["sigma"]
        if scale == 0 or not sigma_end < float(sigma[0]) <= sigma_start:
            return denoised
        without = [{**entry, "model_conds": {k: v for k, v in entry.get("model_conds", {}).items()
                                             if k != "ref_audio"}} for entry in args["cond"]]
        (plain,) = calc_cond_batch(args["model"], [without], args["input"], sigma, args["model_options"])
        return denoised + (args["cond_denoised"] - plain) * scale

    return post_cfg
