"""KSampler and KSamplerAdvanced: the nodes around ``sampling.sample``.

The UNet is pinned on its device for the whole sampling run. Every model
evaluation is an interrupt checkpoint, and every step reports progress through
the kernel's ProgressBar (itself a checkpoint) with a latent preview when the
server runs with ``--preview-method`` other than ``none``.
"""

from __future__ import annotations

from typing import Any

from . import context
from .common import SAMPLER_NAMES, SCHEDULER_NAMES, SEED_MAX, NodeDef

#: SD1.x Latent2RGB projection: a cheap linear map from the 4 latent channels to RGB, for previews.
SD15_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)

_model_sampling: Any = None


def _discrete_sampling() -> Any:
    global _model_sampling
    if _model_sampling is None:
        from ..sampling import DiscreteEpsSampling

        _model_sampling = DiscreteEpsSampling()
    return _model_sampling


def latent_preview(x0: Any) -> Any:
    """``("JPEG", PIL image, max size)`` of the first item of a latent, or None when previews are off."""
    method = context.option("preview_method", "none")
    if method in (None, "none"):
        return None
    import torch
    from PIL import Image

    factors = torch.tensor(SD15_LATENT_RGB, dtype=torch.float32, device=x0.device)
    rgb = x0[0].float().movedim(0, -1) @ factors
    pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8).cpu().numpy()
    return ("JPEG", Image.fromarray(pixels), int(context.option("preview_size", 512) or 512))


def common_ksampler(model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                    positive: list, negative: list, latent: dict[str, Any], denoise: float = 1.0, *,
                    add_noise: bool = True, start_step: int | None = None, last_step: int | None = None,
                    force_full_denoise: bool = False) -> tuple[dict[str, Any]]:
    import torch

    from comfy_kernel.progress import ProgressBar, throw_exception_if_processing_interrupted

    from ..sampling import eps_to_denoiser, guidance, sample

    samples = latent["samples"]
    pbar = ProgressBar(steps)

    def on_step(step: int, x0: torch.Tensor, x: torch.Tensor, total: int) -> None:
        pbar.update_absolute(step + 1, total, latent_preview(x0))

    with model.use() as unet:
        device = next(unet.parameters()).device

        def unet_fn(x_in: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            throw_exception_if_processing_interrupted()
            return unet(x_in, t, ctx)

        ms = _discrete_sampling()
        model_fn = eps_to_denoiser(unet_fn, ms)
        model_fn, pos, neg = guidance.prepare(model_fn, positive, negative, samples.shape)
        noise_mask = latent.get("noise_mask")
        out = sample(
            model_fn, pos, neg, samples.to(device), int(seed), int(steps), float(cfg), sampler_name, scheduler,
            float(denoise), start_step=start_step, last_step=last_step, force_full_denoise=force_full_denoise,
            add_noise=add_noise, batch_index=latent.get("batch_index"),
            noise_mask=noise_mask.to(device) if noise_mask is not None else None,
            callback=on_step, model_sampling=ms,
        )
    result = dict(latent)
    result["samples"] = out.to("cpu", torch.float32)
    return (result,)


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
                               latent_image, denoise, add_noise=add_noise != "disable",
                               start_step=int(start_at_step), last_step=int(end_at_step),
                               force_full_denoise=return_with_leftover_noise != "enable")


NODES = [
    NodeDef("KSampler", KSampler, "KSampler", "nodes"),
    NodeDef("KSamplerAdvanced", KSamplerAdvanced, "KSampler (Advanced)", "nodes"),
]
