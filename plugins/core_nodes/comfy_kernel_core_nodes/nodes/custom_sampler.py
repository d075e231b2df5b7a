"""Custom sampling: the pieces KSampler bundles (noise, guider, sampler, sigmas) as separate nodes.

SamplerCustomAdvanced runs ``guider.sample(noise, latent, sampler, sigmas)``;
with RandomNoise, CFGGuider, KSamplerSelect and BasicScheduler it is exactly
KSampler. The values flowing between these nodes are ComfyUI's objects: NOISE
has ``seed`` and ``generate_noise(latent)``, GUIDER is a ``CFGGuider``
(sampling/guider.py), SAMPLER a ``KSAMPLER`` and SIGMAS a 1-D float tensor.

``Noise_EmptyNoise``, ``Noise_RandomNoise``, ``Guider_Basic`` and
``Guider_DualCFG`` are importable from this module by those names, as node
packs import them from ``comfy_extras.nodes_custom_sampler`` (the guiders
load the sampling code on first access).
"""

from __future__ import annotations

import re
from typing import Any

from comfy_kernel.nodes import io

from .common import SAMPLER_NAMES, SCHEDULER_NAMES, SEED_MAX, NodeDef

MODULE = "comfy_extras.nodes_custom_sampler"
SCHEDULERS = "sampling/custom_sampling/schedulers"
SIGMAS = "sampling/custom_sampling/sigmas"
SAMPLERS = "sampling/custom_sampling/samplers"
GUIDERS = "sampling/custom_sampling/guiders"
NOISE = "sampling/custom_sampling/noise"

_GUIDERS = {"Guider_Basic", "Guider_DualCFG"}


def __getattr__(name: str) -> Any:
    if name in _GUIDERS:
        from ..sampling import guiders

        return getattr(guiders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _float(default: float, lo: float, hi: float, step: float = 0.01, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("FLOAT", {"default": default, "min": lo, "max": hi, "step": step, "round": False, **extra})


SIGMA_MAX = _float(14.614642, 0.0, 5000.0)
SIGMA_MIN = _float(0.0291675, 0.0, 5000.0)
STEPS = ("INT", {"default": 20, "min": 1, "max": 10000})
CFG = ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01})
ETA = _float(1.0, 0.0, 100.0)
S_NOISE = _float(1.0, 0.0, 100.0)
NOISE_DEVICE = (["gpu", "cpu"],)


# --- noise ------------------------------------------------------------------------------------


class Noise_EmptyNoise:  # noqa: N801 - ComfyUI's name, imported by node packs
    """NOISE of zeros: sampling starts from the latent itself."""

    def __init__(self) -> None:
        self.seed = 0

    def generate_noise(self, input_latent: dict[str, Any]) -> Any:
        import torch

        from ..model.nested import NestedTensor, is_nested

        samples = input_latent["samples"]
        if is_nested(samples):
            return NestedTensor(torch.zeros_like(t, device="cpu") for t in samples.unbind())
        return torch.zeros(samples.shape, dtype=samples.dtype, layout=samples.layout, device="cpu")


class Noise_RandomNoise:  # noqa: N801
    """NOISE from a seed: KSampler's noise, per batch index when the latent carries ``batch_index``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def generate_noise(self, input_latent: dict[str, Any]) -> Any:
        from ..sampling.noise import prepare_noise

        return prepare_noise(input_latent["samples"], self.seed, input_latent.get("batch_index"))


class DisableNoise:
    CATEGORY = NOISE
    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}}

    def get_noise(self) -> tuple[Noise_EmptyNoise]:
        return (Noise_EmptyNoise(),)


class RandomNoise(DisableNoise):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"noise_seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX,
                                                    "control_after_generate": True})}}

    def get_noise(self, noise_seed: int) -> tuple[Noise_RandomNoise]:  # type: ignore[override]
        return (Noise_RandomNoise(noise_seed),)


# --- schedulers -------------------------------------------------------------------------------


class _Scheduler:
    CATEGORY = SCHEDULERS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"


class BasicScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "scheduler": (list(SCHEDULER_NAMES),), "steps": STEPS,
                             "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def get_sigmas(self, model: Any, scheduler: str, steps: int, denoise: float) -> tuple[Any]:
        """The last ``steps`` sigmas of a schedule of ``steps / denoise`` steps (KSampler's img2img rule)."""
        import torch

        from ..sampling.schedulers import calculate_sigmas

        total = steps
        if denoise < 1.0:
            if denoise <= 0.0:
                return (torch.FloatTensor([]),)
            total = int(steps / denoise)
        sigmas = calculate_sigmas(model.get_model_object("model_sampling"), scheduler, total).cpu()
        return (sigmas[-(steps + 1):],)


class KarrasScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"steps": STEPS, "sigma_max": SIGMA_MAX, "sigma_min": SIGMA_MIN,
                             "rho": _float(7.0, 0.0, 100.0)}}

    def get_sigmas(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[Any]:
        from ..sampling.schedulers import karras

        return (karras(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"steps": STEPS, "sigma_max": SIGMA_MAX, "sigma_min": SIGMA_MIN}}

    def get_sigmas(self, steps: int, sigma_max: float, sigma_min: float) -> tuple[Any]:
        from ..sampling.schedulers import exponential

        return (exponential(steps, sigma_min, sigma_max),)


class PolyexponentialScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"steps": STEPS, "sigma_max": SIGMA_MAX, "sigma_min": SIGMA_MIN,
                             "rho": _float(1.0, 0.0, 100.0)}}

    def get_sigmas(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[Any]:
        from ..sampling.schedulers import polyexponential

        return (polyexponential(steps, sigma_min, sigma_max, rho),)


class LaplaceScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"steps": STEPS, "sigma_max": SIGMA_MAX, "sigma_min": SIGMA_MIN,
                             "mu": _float(0.0, -10.0, 10.0, 0.1), "beta": _float(0.5, 0.0, 10.0, 0.1)}}

    def get_sigmas(self, steps: int, sigma_max: float, sigma_min: float, mu: float, beta: float) -> tuple[Any]:
        from ..sampling.schedulers import laplace

        return (laplace(steps, sigma_min, sigma_max, mu, beta),)


class SDTurboScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "steps": ("INT", {"default": 1, "min": 1, "max": 10}),
                             "denoise": ("FLOAT", {"default": 1.0, "min": 0, "max": 1.0, "step": 0.01})}}

    def get_sigmas(self, model: Any, steps: int, denoise: float) -> tuple[Any]:
        """Timesteps 999, 899, ... 99 (SD-Turbo's); denoise < 1 starts further down the list."""
        import torch

        start = 10 - int(10 * denoise)
        timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + steps]
        sigmas = model.get_model_object("model_sampling").sigma(timesteps)
        return (torch.cat([sigmas, sigmas.new_zeros([1])]),)


class BetaSamplingScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "steps": STEPS, "alpha": _float(0.6, 0.0, 50.0),
                             "beta": _float(0.6, 0.0, 50.0)}}

    def get_sigmas(self, model: Any, steps: int, alpha: float, beta: float) -> tuple[Any]:
        from ..sampling.schedulers import beta as beta_schedule

        return (beta_schedule(model.get_model_object("model_sampling"), steps, alpha=alpha, beta_=beta),)


class VPScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"steps": STEPS, "beta_d": _float(19.9, 0.0, 5000.0),
                             "beta_min": _float(0.1, 0.0, 5000.0), "eps_s": _float(0.001, 0.0, 1.0, 0.0001)}}

    def get_sigmas(self, steps: int, beta_d: float, beta_min: float, eps_s: float) -> tuple[Any]:
        from ..sampling.schedulers import vp

        return (vp(steps, beta_d, beta_min, eps_s),)


# --- sigma operations -------------------------------------------------------------------------


class _SigmaOp:
    CATEGORY = SIGMAS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"


class SplitSigmas(_SigmaOp):
    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sigmas": ("SIGMAS",), "step": ("INT", {"default": 0, "min": 0, "max": 10000})}}

    def get_sigmas(self, sigmas: Any, step: int) -> tuple[Any, Any]:
        """The schedule up to and from ``step``; both halves share that sigma."""
        return (sigmas[:step + 1], sigmas[step:])


class SplitSigmasDenoise(_SigmaOp):
    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sigmas": ("SIGMAS",),
                             "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def get_sigmas(self, sigmas: Any, denoise: float) -> tuple[Any, Any]:
        """The last ``round(steps * denoise)`` steps go to ``low_sigmas``, the ones before to ``high_sigmas``.

        As in ComfyUI, a denoise rounding to 0 steps gives an empty ``high_sigmas``
        (``sigmas[:-0]``) and the last sigma alone as ``low_sigmas``.
        """
        steps = max(sigmas.shape[-1] - 1, 0)
        total = round(steps * denoise)
        return (sigmas[:-total], sigmas[-(total + 1):])


class FlipSigmas(_SigmaOp):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sigmas": ("SIGMAS",)}}

    def get_sigmas(self, sigmas: Any) -> tuple[Any]:
        """The schedule reversed (for inversion); a leading 0 becomes 0.0001."""
        if len(sigmas) == 0:
            return (sigmas,)
        sigmas = sigmas.flip(0)
        if sigmas[0] == 0:
            sigmas[0] = 0.0001
        return (sigmas,)


class SetFirstSigma(_SigmaOp):
    FUNCTION = "set_first_sigma"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sigmas": ("SIGMAS",),
                             "sigma": ("FLOAT", {"default": 136.0, "min": 0.0, "max": 20000.0, "step": 0.001,
                                                 "round": False})}}

    def set_first_sigma(self, sigmas: Any, sigma: float) -> tuple[Any]:
        sigmas = sigmas.clone()
        sigmas[0] = sigma
        return (sigmas,)


class ExtendIntermediateSigmas(_SigmaOp):
    FUNCTION = "extend"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "sigmas": ("SIGMAS",),
            "steps": ("INT", {"default": 2, "min": 1, "max": 100}),
            "start_at_sigma": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 20000.0, "step": 0.01, "round": False}),
            "end_at_sigma": ("FLOAT", {"default": 12.0, "min": 0.0, "max": 20000.0, "step": 0.01, "round": False}),
            "spacing": (["linear", "cosine", "sine"],),
        }}

    def extend(self, sigmas: Any, steps: int, start_at_sigma: float, end_at_sigma: float,
               spacing: str) -> tuple[Any]:
        """``steps - 1`` extra sigmas inside every step whose sigma lies in [end_at_sigma, start_at_sigma].

        A negative ``start_at_sigma`` means no upper bound. ``cosine`` packs the new
        sigmas towards the step's end, ``sine`` towards its start.
        """
        import math

        import torch

        if start_at_sigma < 0:
            start_at_sigma = float("inf")
        x = torch.linspace(0, 1, steps + 1, device=sigmas.device)[1:-1]
        if spacing == "cosine":
            fractions = torch.sin(x * math.pi / 2)
        elif spacing == "sine":
            fractions = 1 - torch.cos(x * math.pi / 2)
        else:
            fractions = x
        out: list[Any] = []
        for current, following in zip(sigmas[:-1], sigmas[1:], strict=True):
            out.append(current)
            if end_at_sigma <= current <= start_at_sigma:
                out.extend((fractions * (following - current) + current).tolist())
        if len(sigmas) > 0:
            out.append(sigmas[-1])
        return (torch.FloatTensor([float(v) for v in out]),)


class SamplingPercentToSigma:
    CATEGORY = SIGMAS
    RETURN_TYPES = ("FLOAT",)
    RETURN_NAMES = ("sigma_value",)
    FUNCTION = "get_sigma"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL", {}),
            "sampling_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.0001}),
            "return_actual_sigma": ("BOOLEAN", {
                "default": False,
                "tooltip": "At 0 and 1, return the model's largest / smallest sigma instead of the values "
                           "range checks use (above any sigma, and 0)."}),
        }}

    def get_sigma(self, model: Any, sampling_percent: float, return_actual_sigma: bool) -> tuple[float]:
        model_sampling = model.get_model_object("model_sampling")
        value = model_sampling.percent_to_sigma(sampling_percent)
        if return_actual_sigma:
            if sampling_percent == 0.0:
                value = model_sampling.sigma_max.item()
            elif sampling_percent == 1.0:
                value = model_sampling.sigma_min.item()
        return (value,)


class ManualSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="ManualSigmas", category="model/sampling/sigmas", is_experimental=True,
                         search_aliases=["custom noise schedule", "define sigmas"],
                         inputs=[io.String.Input("sigmas", default="1, 0.5", multiline=False)],
                         outputs=[io.Sigmas.Output()])

    @classmethod
    def execute(cls, sigmas: str) -> io.NodeOutput:
        """Every number in the text, in order (any separators), as SIGMAS."""
        import torch

        values = [float(v) for v in re.findall(r"[-+]?(?:\d*\.*\d+)", sigmas)]
        return io.NodeOutput(torch.FloatTensor(values))


# --- samplers ---------------------------------------------------------------------------------


class _Sampler:
    CATEGORY = SAMPLERS
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"


def _ksampler(name: str, options: dict[str, Any] | None = None) -> tuple[Any]:
    from ..sampling.ksampler import ksampler

    return (ksampler(name, options),)


class KSamplerSelect(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sampler_name": (list(SAMPLER_NAMES),)}}

    def get_sampler(self, sampler_name: str) -> tuple[Any]:
        from ..sampling.ksampler import sampler_object

        return (sampler_object(sampler_name),)


class SamplerDPMPP_3M_SDE(_Sampler):  # noqa: N801
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": ETA, "s_noise": S_NOISE, "noise_device": NOISE_DEVICE}}

    def get_sampler(self, eta: float, s_noise: float, noise_device: str) -> tuple[Any]:
        name = "dpmpp_3m_sde" if noise_device == "cpu" else "dpmpp_3m_sde_gpu"
        return _ksampler(name, {"eta": eta, "s_noise": s_noise})


class SamplerDPMPP_2M_SDE(_Sampler):  # noqa: N801
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"solver_type": (["midpoint", "heun"],), "eta": ETA, "s_noise": S_NOISE,
                             "noise_device": NOISE_DEVICE}}

    def get_sampler(self, solver_type: str, eta: float, s_noise: float, noise_device: str) -> tuple[Any]:
        name = "dpmpp_2m_sde" if noise_device == "cpu" else "dpmpp_2m_sde_gpu"
        return _ksampler(name, {"eta": eta, "s_noise": s_noise, "solver_type": solver_type})


class SamplerDPMPP_SDE(_Sampler):  # noqa: N801
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": ETA, "s_noise": S_NOISE, "r": _float(0.5, 0.0, 100.0),
                             "noise_device": NOISE_DEVICE}}

    def get_sampler(self, eta: float, s_noise: float, r: float, noise_device: str) -> tuple[Any]:
        name = "dpmpp_sde" if noise_device == "cpu" else "dpmpp_sde_gpu"
        return _ksampler(name, {"eta": eta, "s_noise": s_noise, "r": r})


class SamplerDPMPP_2S_Ancestral(_Sampler):  # noqa: N801
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": ETA, "s_noise": S_NOISE}}

    def get_sampler(self, eta: float, s_noise: float) -> tuple[Any]:
        return _ksampler("dpmpp_2s_ancestral", {"eta": eta, "s_noise": s_noise})


class SamplerEulerAncestral(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": ETA, "s_noise": S_NOISE}}

    def get_sampler(self, eta: float, s_noise: float) -> tuple[Any]:
        return _ksampler("euler_ancestral", {"eta": eta, "s_noise": s_noise})


class SamplerEulerAncestralCFGPP(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": _float(1.0, 0.0, 1.0), "s_noise": _float(1.0, 0.0, 10.0)}}

    def get_sampler(self, eta: float, s_noise: float) -> tuple[Any]:
        return _ksampler("euler_ancestral_cfg_pp", {"eta": eta, "s_noise": s_noise})


class SamplerLMS(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"order": ("INT", {"default": 4, "min": 1, "max": 100})}}

    def get_sampler(self, order: int) -> tuple[Any]:
        return _ksampler("lms", {"order": order})


class SamplerDPMAdaptative(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "order": ("INT", {"default": 3, "min": 2, "max": 3}),
            "rtol": _float(0.05, 0.0, 100.0), "atol": _float(0.0078, 0.0, 100.0),
            "h_init": _float(0.05, 0.0, 100.0), "pcoeff": _float(0.0, 0.0, 100.0),
            "icoeff": _float(1.0, 0.0, 100.0), "dcoeff": _float(0.0, 0.0, 100.0),
            "accept_safety": _float(0.81, 0.0, 100.0), "eta": _float(0.0, 0.0, 100.0), "s_noise": S_NOISE,
        }}

    def get_sampler(self, order: int, rtol: float, atol: float, h_init: float, pcoeff: float, icoeff: float,
                    dcoeff: float, accept_safety: float, eta: float, s_noise: float) -> tuple[Any]:
        return _ksampler("dpm_adaptive", {"order": order, "rtol": rtol, "atol": atol, "h_init": h_init,
                                          "pcoeff": pcoeff, "icoeff": icoeff, "dcoeff": dcoeff,
                                          "accept_safety": accept_safety, "eta": eta, "s_noise": s_noise})


class SamplerER_SDE(_Sampler):  # noqa: N801
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "solver_type": ("COMBO", {"options": ["ER-SDE", "Reverse-time SDE", "ODE"]}),
            "max_stage": ("INT", {"default": 3, "min": 1, "max": 3}),
            "eta": _float(1.0, 0.0, 100.0, tooltip="Strength of the reverse-time SDE's noise; 0 makes it the "
                                                   "deterministic ODE. Not used by the ER-SDE solver type."),
            "s_noise": S_NOISE,
        }}

    def get_sampler(self, solver_type: str, max_stage: int, eta: float, s_noise: float) -> tuple[Any]:
        """ER-SDE's own noise scaler, or x ** (eta + 1) for the reverse-time SDE (eta 0: the ODE, no noise)."""
        if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0, 0

        def reverse_time_sde_noise_scaler(x: Any) -> Any:
            return x ** (eta + 1)

        scaler = None if solver_type == "ER-SDE" else reverse_time_sde_noise_scaler
        return _ksampler("er_sde", {"s_noise": s_noise, "noise_scaler": scaler, "max_stage": max_stage})


class SamplerSASolver(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL", {}),
            "eta": _float(1.0, 0.0, 10.0),
            "sde_start_percent": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 1.0, "step": 0.001}),
            "sde_end_percent": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 1.0, "step": 0.001}),
            "s_noise": S_NOISE,
            "predictor_order": ("INT", {"default": 3, "min": 1, "max": 6}),
            "corrector_order": ("INT", {"default": 4, "min": 0, "max": 6}),
            "use_pece": ("BOOLEAN", {}),
            "simple_order_2": ("BOOLEAN", {}),
        }}

    def get_sampler(self, model: Any, eta: float, sde_start_percent: float, sde_end_percent: float, s_noise: float,
                    predictor_order: int, corrector_order: int, use_pece: bool, simple_order_2: bool) -> tuple[Any]:
        """SA-Solver, stochastic (strength ``eta``) only between the two percents of the schedule."""
        from ..sampling.samplers_sde import _tau_interval

        model_sampling = model.get_model_object("model_sampling")
        tau = _tau_interval(model_sampling.percent_to_sigma(sde_start_percent),
                            model_sampling.percent_to_sigma(sde_end_percent), eta=eta)
        return _ksampler("sa_solver", {"tau_func": tau, "s_noise": s_noise, "predictor_order": predictor_order,
                                       "corrector_order": corrector_order, "use_pece": use_pece,
                                       "simple_order_2": simple_order_2})


# --- guiders ----------------------------------------------------------------------------------


class BasicGuider:
    CATEGORY = GUIDERS
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "conditioning": ("CONDITIONING",)}}

    def get_guider(self, model: Any, conditioning: list) -> tuple[Any]:
        from ..sampling.guiders import Guider_Basic

        guider = Guider_Basic(model)
        guider.set_conds(conditioning)
        return (guider,)


class CFGGuider:
    CATEGORY = GUIDERS
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "cfg": CFG}}

    def get_guider(self, model: Any, positive: list, negative: list, cfg: float) -> tuple[Any]:
        from ..sampling.guider import CFGGuider as Guider

        guider = Guider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return (guider,)


class DualCFGGuider:
    CATEGORY = GUIDERS
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "cond1": ("CONDITIONING",), "cond2": ("CONDITIONING",),
                             "negative": ("CONDITIONING",), "cfg_conds": CFG, "cfg_cond2_negative": CFG,
                             "style": (["regular", "nested"],)}}

    def get_guider(self, model: Any, cond1: list, cond2: list, negative: list, cfg_conds: float,
                   cfg_cond2_negative: float, style: str) -> tuple[Any]:
        from ..sampling.guiders import Guider_DualCFG

        guider = Guider_DualCFG(model)
        guider.set_conds(cond1, cond2, negative)
        guider.set_cfg(cfg_conds, cfg_cond2_negative, nested=style == "nested")
        return (guider,)


class DualModelGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DualModelGuider", display_name="Dual Model CFG Guider", category="model/sampling/guiders",
            is_experimental=True,
            inputs=[io.Model.Input("model", tooltip="Runs the positive (conditional) pass."),
                    io.Model.Input("model_negative", optional=True,
                                   tooltip="Runs the negative (unconditional) pass; unconnected: plain CFG on model."),
                    io.Conditioning.Input("positive"),
                    io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01),
                    io.Conditioning.Input("negative", optional=True,
                                          tooltip="Unconnected: a negative pass without text (image inputs only).")],
            outputs=[io.Guider.Output()])

    @classmethod
    def execute(cls, model: Any, positive: list, cfg: float, model_negative: Any = None,
                negative: list | None = None) -> io.NodeOutput:
        """Without a negative conditioning the negative side is one entry with no text tensor at all."""
        from ..sampling.guider import CFGGuider as Guider
        from ..sampling.guiders import Guider_DualModel

        if negative is None:
            negative = [[None, {}]]
        guider = Guider(model) if model_negative is None else Guider_DualModel(model, model_negative)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return io.NodeOutput(guider)


class CFGOverride(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CFGOverride", display_name="CFG Override", category="model/sampling/guiders",
            description="The guider's cfg set to a fixed value over a [start, end] percent (sigma) range; where "
                        "overrides overlap, the one nearest the sampler wins.",
            inputs=[io.Model.Input("model"),
                    io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01),
                    io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001),
                    io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001)],
            outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model: Any, cfg: float, start_percent: float, end_percent: float) -> io.NodeOutput:
        """A predict_noise wrapper over the sigmas of the model's sampling at this node."""
        from ..model.extension import WrappersMP
        from ..sampling.guiders import cfg_override

        sampling = model.get_model_object("model_sampling")
        wrapper = cfg_override(cfg, sampling.percent_to_sigma(start_percent), sampling.percent_to_sigma(end_percent))
        m = model.clone()
        m.add_wrapper(WrappersMP.PREDICT_NOISE, wrapper)
        return io.NodeOutput(m)


# --- sampling ---------------------------------------------------------------------------------


def _denoised_output(latent: dict[str, Any], out: dict[str, Any], x0_output: dict[str, Any], model: Any) -> dict:
    """The last x0 prediction in the VAE's units, or the output itself when no step ran."""
    if "x0" not in x0_output:
        return out
    denoised = latent.copy()
    denoised["samples"] = model.model.process_latent_out(x0_output["x0"].cpu())
    return denoised


class SamplerCustom:
    CATEGORY = "sampling/custom_sampling"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL",),
            "add_noise": ("BOOLEAN", {"default": True}),
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True}),
            "cfg": CFG,
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "sampler": ("SAMPLER",),
            "sigmas": ("SIGMAS",),
            "latent_image": ("LATENT",),
        }}

    def sample(self, model: Any, add_noise: bool, noise_seed: int, cfg: float, positive: list, negative: list,
               sampler: Any, sigmas: Any, latent_image: dict[str, Any]) -> tuple[dict, dict]:
        from ..sampling import sample as comfy_sample
        from .ksampler import prepare_callback

        latent = latent_image.copy()
        latent["samples"] = comfy_sample.fix_empty_latent_channels(model, latent_image["samples"])
        noise = (Noise_RandomNoise(noise_seed) if add_noise else Noise_EmptyNoise()).generate_noise(latent)
        x0_output: dict[str, Any] = {}
        callback = prepare_callback(model, sigmas.shape[-1] - 1, x0_output)
        samples = comfy_sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative,
                                             latent["samples"], noise_mask=latent.get("noise_mask"),
                                             callback=callback, seed=noise_seed)
        out = latent.copy()
        out["samples"] = samples
        return (out, _denoised_output(latent, out, x0_output, model))


class SamplerCustomAdvanced:
    CATEGORY = "sampling/custom_sampling"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"noise": ("NOISE",), "guider": ("GUIDER",), "sampler": ("SAMPLER",),
                             "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)}}

    def sample(self, noise: Any, guider: Any, sampler: Any, sigmas: Any,
               latent_image: dict[str, Any]) -> tuple[dict, dict]:
        from ..sampling.sample import fix_empty_latent_channels
        from .ksampler import prepare_callback

        model = guider.model_patcher
        latent = latent_image.copy()
        latent["samples"] = fix_empty_latent_channels(model, latent_image["samples"])
        x0_output: dict[str, Any] = {}
        callback = prepare_callback(model, sigmas.shape[-1] - 1, x0_output)
        samples = guider.sample(noise.generate_noise(latent), latent["samples"], sampler, sigmas,
                                denoise_mask=latent.get("noise_mask"), callback=callback, seed=noise.seed)
        out = latent.copy()
        out["samples"] = samples.to("cpu")
        return (out, _denoised_output(latent, out, x0_output, model))


class AddNoise:
    CATEGORY = "_for_testing/custom_sampling/noise"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "add_noise"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "noise": ("NOISE",), "sigmas": ("SIGMAS",),
                             "latent_image": ("LATENT",)}}

    def add_noise(self, model: Any, noise: Any, sigmas: Any, latent_image: dict[str, Any]) -> tuple[dict]:
        """The latent noised to the size of the schedule's span (|first - last| sigma), in the VAE's units."""
        import torch

        if len(sigmas) == 0:
            return (latent_image,)
        samples = latent_image["samples"]
        noisy = noise.generate_noise(latent_image)
        model_sampling = model.get_model_object("model_sampling")
        scale = torch.abs(sigmas[0] - sigmas[-1]) if len(sigmas) > 1 else sigmas[0]
        if torch.count_nonzero(samples) > 0:  # an empty latent stays unshifted
            samples = model.get_model_object("process_latent_in")(samples)
        noisy = model_sampling.noise_scaling(scale, noisy, samples)
        noisy = model.get_model_object("process_latent_out")(noisy)
        out = latent_image.copy()
        out["samples"] = torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0)
        return (out,)


def _v1(cls: type) -> NodeDef:
    return NodeDef(cls.__name__, cls, cls.__name__, MODULE)


NODES = [
    _v1(SamplerCustom), _v1(BasicScheduler), _v1(KarrasScheduler), _v1(ExponentialScheduler),
    _v1(PolyexponentialScheduler), _v1(LaplaceScheduler), _v1(VPScheduler), _v1(BetaSamplingScheduler),
    _v1(SDTurboScheduler), _v1(KSamplerSelect), _v1(SamplerEulerAncestral),
    NodeDef("SamplerEulerAncestralCFGPP", SamplerEulerAncestralCFGPP, "SamplerEulerAncestralCFG++", MODULE),
    _v1(SamplerLMS), _v1(SamplerDPMPP_3M_SDE), _v1(SamplerDPMPP_2M_SDE), _v1(SamplerDPMPP_SDE),
    _v1(SamplerDPMPP_2S_Ancestral), _v1(SamplerDPMAdaptative), _v1(SamplerER_SDE), _v1(SamplerSASolver),
    _v1(SplitSigmas), _v1(SplitSigmasDenoise), _v1(FlipSigmas), _v1(SetFirstSigma), _v1(ExtendIntermediateSigmas),
    _v1(SamplingPercentToSigma), _v1(CFGGuider), _v1(DualCFGGuider), _v1(BasicGuider), _v1(RandomNoise),
    _v1(DisableNoise), _v1(AddNoise), _v1(SamplerCustomAdvanced),
    NodeDef("ManualSigmas", ManualSigmas, None, MODULE),
    NodeDef("DualModelGuider", DualModelGuider, "Dual Model CFG Guider", MODULE),
    NodeDef("CFGOverride", CFGOverride, "CFG Override", MODULE),
]
