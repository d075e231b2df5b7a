"""KSampler and KSamplerAdvanced: the nodes around ``sampling.sample``.

The model is pinned on its device for the whole sampling run. Every model
evaluation is an interrupt checkpoint, and every step reports progress through
the kernel's ProgressBar (itself a checkpoint) with a latent preview when the
server runs with ``--preview-method`` other than ``none``.
"""

from __future__ import annotations

from typing import Any

from . import context
from .common import SAMPLER_NAMES, SCHEDULER_NAMES, SEED_MAX, NodeDef


def latent_preview(x0: Any, latent_format: Any) -> Any:
    """``("JPEG", PIL image, max size)`` of the first item of a latent, or None when previews are off.

    The image is the latent format's Latent2RGB projection (a cheap linear map
    from the latent channels to RGB).
    """
    method = context.option("preview_method", "none")
    if method in (None, "none") or latent_format is None or latent_format.latent_rgb_factors is None:
        return None
    import torch
    from PIL import Image

    from ..model.nested import is_nested

    if is_nested(x0):  # an audio + video latent: the video part
        x0 = x0.unbind()[0]
    factors = torch.tensor(latent_format.latent_rgb_factors, dtype=torch.float32, device=x0.device)
    sample = x0[0].float()
    if sample.ndim == 4:  # video latents: the first frame
        sample = sample[:, 0]
    rgb = sample.movedim(0, -1) @ factors
    if latent_format.latent_rgb_factors_bias is not None:
        rgb = rgb + torch.tensor(latent_format.latent_rgb_factors_bias, dtype=torch.float32, device=x0.device)
    pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8).cpu().numpy()
    return ("JPEG", Image.fromarray(pixels), int(context.option("preview_size", 512) or 512))


def prepare_callback(model: Any, steps: int, x0_output_dict: dict[str, Any] | None = None) -> Any:
    """The per-step callback samplers call: progress, previews, and the last x0 for ``x0_output_dict``.

    Every call is also an interrupt checkpoint (through the kernel's ProgressBar).
    """
    from comfy_kernel.progress import ProgressBar

    pbar = ProgressBar(steps)
    latent_format = model.get_model_object("latent_format") if model is not None else None

    def callback(step: int, x0: Any, x: Any, total_steps: int) -> None:
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        pbar.update_absolute(step + 1, total_steps, latent_preview(x0, latent_format))

    return callback


def common_ksampler(model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                    positive: list, negative: list, latent: dict[str, Any], denoise: float = 1.0,
                    disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
                    force_full_denoise: bool = False) -> tuple[dict[str, Any]]:
    """What KSampler and KSamplerAdvanced run (ComfyUI's ``nodes.common_ksampler``)."""
    from ..sampling import sample as comfy_sample

    latent_image = comfy_sample.fix_empty_latent_channels(model, latent["samples"])
    if disable_noise:
        from .custom_sampler import Noise_EmptyNoise

        noise = Noise_EmptyNoise().generate_noise({"samples": latent_image})
    else:
        noise = comfy_sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    samples = comfy_sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative,
                                  latent_image, denoise=denoise, disable_noise=disable_noise, start_step=start_step,
                                  last_step=last_step, force_full_denoise=force_full_denoise,
                                  noise_mask=latent.get("noise_mask"), callback=prepare_callback(model, steps),
                                  seed=seed)
    out = dict(latent)
    out["samples"] = samples
    return (out,)


def _sampler_inputs() -> dict[str, Any]:
    return {
        "steps": ("INT", {"default": 20, "min": 1, "max": 10000,
                          "tooltip": "How many denoising steps to take."}),
        "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                          "tooltip": "Classifier-free guidance scale: how strongly the prompt is followed."}),
        "sampler_name": (list(SAMPLER_NAMES), {"tooltip": "The sampling algorithm."}),
        "scheduler": (list(SCHEDULER_NAMES), {"tooltip": "How the noise levels are spaced over the steps."}),
        "positive": ("CONDITIONING", {"tooltip": "What the image should show."}),
        "negative": ("CONDITIONING", {"tooltip": "What the image should avoid."}),
        "latent_image": ("LATENT", {"tooltip": "The latent to denoise."}),
    }


class KSampler:
    DESCRIPTION = "Denoises a latent with a model, guided by positive and negative conditioning."
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        inputs: dict[str, Any] = {
            "model": ("MODEL", {"tooltip": "The diffusion model."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                             "tooltip": "Seed of the initial noise."}),
        }
        inputs.update(_sampler_inputs())
        inputs["denoise"] = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                       "tooltip": "Fraction of the schedule to run; below 1 keeps part of the input."})
        return {"required": inputs}

    def sample(self, model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
               positive: list, negative: list, latent_image: dict[str, Any], denoise: float = 1.0):
        return common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                               latent_image, denoise)


class KSamplerAdvanced:
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        inputs: dict[str, Any] = {
            "model": ("MODEL",),
            "add_noise": (["enable", "disable"],),
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True}),
        }
        inputs.update({k: (v[0],) if k in ("positive", "negative", "latent_image") else v
                       for k, v in _sampler_inputs().items()})
        inputs["start_at_step"] = ("INT", {"default": 0, "min": 0, "max": 10000})
        inputs["end_at_step"] = ("INT", {"default": 10000, "min": 0, "max": 10000})
        inputs["return_with_leftover_noise"] = (["disable", "enable"],)
        return {"required": inputs}

    def sample(self, model: Any, add_noise: str, noise_seed: int, steps: int, cfg: float, sampler_name: str,
               scheduler: str, positive: list, negative: list, latent_image: dict[str, Any], start_at_step: int,
               end_at_step: int, return_with_leftover_noise: str, denoise: float = 1.0):
        return common_ksampler(model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
                               latent_image, denoise, disable_noise=add_noise == "disable",
                               start_step=int(start_at_step), last_step=int(end_at_step),
                               force_full_denoise=return_with_leftover_noise != "enable")


NODES = [
    NodeDef("KSampler", KSampler, "KSampler", "nodes"),
    NodeDef("KSamplerAdvanced", KSamplerAdvanced, "KSampler (Advanced)", "nodes"),
]
