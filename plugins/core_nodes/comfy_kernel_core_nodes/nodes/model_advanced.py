"""MODEL patches of the sampling set-up: noise schedule, prediction type, noise scale, RescaleCFG, compute dtype.

The ModelSampling* nodes replace the clone's ``model_sampling`` object (an
object patch): everything that samples reads it through
``get_model_object("model_sampling")``, so schedulers, samplers and the
network's timestep inputs all follow the new schedule.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from .common import MAX_RESOLUTION, NodeDef

MODULE = "comfy_extras.nodes_model_advanced"
CATEGORY = "advanced/model"


def _shift(default: float) -> tuple[str, dict[str, Any]]:
    return ("FLOAT", {"default": default, "min": 0.0, "max": 100.0, "step": 0.01})


def _sigma(default: float) -> tuple[str, dict[str, Any]]:
    return ("FLOAT", {"default": default, "min": 0.0, "max": 1000.0, "step": 0.001, "round": False})


def _patched(model: Any, model_sampling: Any, latent_format: Any = None) -> tuple[Any]:
    m = model.clone()
    m.add_object_patch("model_sampling", model_sampling)
    if latent_format is not None:
        m.add_object_patch("latent_format", latent_format)
    return (m,)


class _Patch:
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"


class ModelSamplingDiscrete(_Patch):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "sampling": (["eps", "v_prediction", "lcm", "x0", "img_to_img"],),
                             "zsnr": ("BOOLEAN", {"default": False})}}

    def patch(self, model: Any, sampling: str, zsnr: bool) -> tuple[Any]:
        """The 1000-step DDPM schedule with another prediction type; ``lcm`` keeps the 50 distilled steps,
        ``zsnr`` rescales the schedule to zero terminal SNR."""
        from ..model import model_sampling as ms

        schedule = ms.ModelSamplingDiscreteDistilled if sampling == "lcm" else ms.ModelSamplingDiscrete
        return _patched(model, ms.combine(schedule, ms.PREDICTIONS[sampling], model.model.model_config, zsnr=zsnr))


class ModelSamplingStableCascade(_Patch):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "shift": _shift(2.0)}}

    def patch(self, model: Any, shift: float) -> tuple[Any]:
        from ..model import model_sampling as ms

        sampling = ms.combine(ms.StableCascadeSampling, ms.EPS, model.model.model_config)
        sampling.set_parameters(shift)
        return _patched(model, sampling)


class ModelSamplingSD3(_Patch):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "shift": _shift(3.0)}}

    def patch(self, model: Any, shift: float, multiplier: float = 1000) -> tuple[Any]:
        """Rectified-flow sigmas with SD3's timestep shift; the network sees sigma * multiplier."""
        from ..model import model_sampling as ms

        sampling = ms.combine(ms.ModelSamplingDiscreteFlow, ms.CONST, model.model.model_config)
        sampling.set_parameters(shift=shift, multiplier=multiplier)
        return _patched(model, sampling)


class ModelSamplingAuraFlow(ModelSamplingSD3):
    FUNCTION = "patch_aura"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "shift": _shift(1.73)}}

    def patch_aura(self, model: Any, shift: float) -> tuple[Any]:
        return self.patch(model, shift, multiplier=1.0)


class ModelSamplingFlux(_Patch):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 8}
        return {"required": {"model": ("MODEL",), "max_shift": _shift(1.15), "base_shift": _shift(0.5),
                             "width": ("INT", dict(size)), "height": ("INT", dict(size))}}

    def patch(self, model: Any, max_shift: float, base_shift: float, width: int, height: int) -> tuple[Any]:
        """Flux's shift, linear in the image's token count: base_shift at 256 tokens, max_shift at 4096."""
        from ..model import model_sampling as ms

        slope = (max_shift - base_shift) / (4096 - 256)
        shift = (width * height / (8 * 8 * 2 * 2)) * slope + (base_shift - slope * 256)
        sampling = ms.combine(ms.ModelSamplingFlux, ms.CONST, model.model.model_config)
        sampling.set_parameters(shift=shift)
        return _patched(model, sampling)


class ModelSamplingContinuousEDM(_Patch):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",),
                             "sampling": (["v_prediction", "edm", "edm_playground_v2.5", "eps", "cosmos_rflow"],),
                             "sigma_max": _sigma(120.0), "sigma_min": _sigma(0.002)}}

    def patch(self, model: Any, sampling: str, sigma_max: float, sigma_min: float) -> tuple[Any]:
        """Continuous log-uniform sigmas; ``edm`` and the Playground 2.5 preset use sigma_data 0.5
        (Playground also its own latent format)."""
        from ..model import latent_formats
        from ..model import model_sampling as ms

        schedule, sigma_data, latent_format = ms.ModelSamplingContinuousEDM, 1.0, None
        prediction = ms.PREDICTIONS["edm" if sampling.startswith("edm") else sampling]
        if sampling.startswith("edm"):
            sigma_data = 0.5
        if sampling == "edm_playground_v2.5":
            latent_format = latent_formats.SDXL_Playground_2_5()
        elif sampling == "cosmos_rflow":
            schedule = ms.ModelSamplingCosmosRFlow
        model_sampling = ms.combine(schedule, prediction, model.model.model_config)
        model_sampling.set_parameters(sigma_min, sigma_max, sigma_data)
        return _patched(model, model_sampling, latent_format)


class ModelSamplingContinuousV(_Patch):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "sampling": (["v_prediction"],), "sigma_max": _sigma(500.0),
                             "sigma_min": _sigma(0.03)}}

    def patch(self, model: Any, sampling: str, sigma_max: float, sigma_min: float) -> tuple[Any]:
        from ..model import model_sampling as ms

        model_sampling = ms.combine(ms.ModelSamplingContinuousV, ms.V_PREDICTION, model.model.model_config)
        model_sampling.set_parameters(sigma_min, sigma_max, 1.0)
        return _patched(model, model_sampling)


class RescaleCFG(_Patch):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",),
                             "multiplier": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def patch(self, model: Any, multiplier: float) -> tuple[Any]:
        from ..patches.cfg import rescale_cfg

        m = model.clone()
        m.set_model_sampler_cfg_function(rescale_cfg(multiplier))
        return (m,)


class ModelNoiseScale(_Patch):
    CATEGORY = "model/patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "noise_scale": (
            "FLOAT", {"default": 1.0, "min": 0.0, "max": 64.0, "step": 0.01,
                      "tooltip": "The size of the noise the model was trained on (HiDream-O1: 8.0, its dev "
                                 "model 7.5)."})}}

    def patch(self, model: Any, noise_scale: float) -> tuple[Any]:
        """A fresh copy of the rectified-flow model sampling (same shift and multiplier) whose noise is
        ``noise_scale`` times larger wherever the model's ``noise_scaling`` adds it."""
        original = model.get_model_object("model_sampling")
        if not (hasattr(original, "set_noise_scale") and hasattr(original, "multiplier")):
            raise ValueError("ModelNoiseScale needs a rectified-flow model (SD3-style sampling with a shift and a "
                             f"multiplier); this model samples with {type(original).__name__}")
        sampling = type(original)(model.model.model_config)
        sampling.set_parameters(shift=original.shift, multiplier=original.multiplier)
        sampling.set_noise_scale(noise_scale)
        return _patched(model, sampling)


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class ModelComputeDtype(_Patch):
    CATEGORY = "advanced/debug/model"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "dtype": (["default", "fp32", "fp16", "bf16"],)}}

    def patch(self, model: Any, dtype: str) -> tuple[Any]:
        """Run the diffusion model's maths in ``dtype`` (``default``: the device's choice)."""
        import torch

        m = model.clone()
        m.set_model_compute_dtype(getattr(torch, _DTYPES[dtype]) if dtype in _DTYPES else None)
        return (m,)


class ModelAttentionBackend(io.ComfyNode):
    """The dense attention implementation; here PyTorch's scaled-dot-product attention is the only one.

    ComfyUI also offers Comfy Kitchen's INT8 attention where that package and an
    NVIDIA/AMD GPU are present (its option is listed only there); a workflow
    choosing it is accepted and runs PyTorch attention, as ComfyUI does when the
    backend is unavailable.
    """

    BACKENDS = ["pytorch attention"]

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ModelAttentionBackend", display_name="Model Attention Backend", category="model/patch",
            is_experimental=True,
            description="Selects the dense attention implementation of the model (also used by Block Sparse "
                        "Attention where sparse attention is off).",
            inputs=[io.Model.Input("model", tooltip="The model to patch."),
                    io.Combo.Input("attention", display_name="backend", options=cls.BACKENDS,
                                   default="pytorch attention",
                                   tooltip="The dense attention backend; only PyTorch attention is available here.")],
            outputs=[io.Model.Output(display_name="model", tooltip="The model with the selected backend.")])

    @classmethod
    def validate_inputs(cls, attention: str) -> bool:
        return True  # backends another machine lists are accepted and fall back to PyTorch attention

    @classmethod
    def execute(cls, model: Any, attention: str) -> io.NodeOutput:
        import logging

        if attention not in cls.BACKENDS:
            logging.warning("Attention backend '%s' is unavailable; using PyTorch attention.", attention)
        return io.NodeOutput(model.clone())


def _v1(cls: type) -> NodeDef:
    return NodeDef(cls.__name__, cls, cls.__name__, MODULE)


NODES = [_v1(ModelSamplingDiscrete), _v1(ModelSamplingContinuousEDM), _v1(ModelSamplingContinuousV),
         _v1(ModelSamplingStableCascade), _v1(ModelSamplingSD3), _v1(ModelSamplingAuraFlow), _v1(ModelSamplingFlux),
         _v1(RescaleCFG), _v1(ModelComputeDtype), _v1(ModelNoiseScale),
         NodeDef("ModelAttentionBackend", ModelAttentionBackend, "Model Attention Backend", MODULE)]
