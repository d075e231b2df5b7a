"""How a diffusion model's output and the sampler's state relate: prediction types and noise schedules.

A model sampling object is the combination of one *prediction type* (what the
network predicts: noise, velocity, x0, a flow) and one *schedule* (which
sigmas exist and how a sigma maps to the timestep the network is fed). They are
``torch.nn.Module`` subclasses with ``sigmas`` / ``log_sigmas`` buffers, as in
ComfyUI, because node packs read those buffers and call these methods by name
(``timestep``, ``sigma``, ``percent_to_sigma``, ``calculate_input``,
``calculate_denoised``, ``noise_scaling``, ``inverse_noise_scaling``).

Tables are computed in float64 and stored as float32, exactly as ComfyUI does,
so schedules agree with its to the last bit.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def _per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma)
    if sigma.ndim == 0:
        return sigma.to(like.device)
    return sigma.view(sigma.shape[:1] + (1,) * (like.ndim - 1)).to(like.device)


# --- prediction types --------------------------------------------------------------------------


class EPS:
    """The network predicts the noise; samplers work in the variance-exploding sigma space."""

    sigma_data = 1.0

    def calculate_input(self, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        sigma = _per_sample(sigma, noise)
        return noise / (sigma**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor,
                           model_input: torch.Tensor) -> torch.Tensor:
        return model_input - model_output * _per_sample(sigma, model_output)

    def noise_scaling(self, sigma: torch.Tensor | float, noise: torch.Tensor, latent_image: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=noise.dtype, device=noise.device).reshape(-1)
        sigma = sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1))
        noise = noise * (torch.sqrt(1.0 + sigma**2.0) if max_denoise else sigma)
        return noise + latent_image

    def inverse_noise_scaling(self, sigma: torch.Tensor | float, latent: torch.Tensor) -> torch.Tensor:
        return latent


class V_PREDICTION(EPS):
    """The network predicts the velocity v = alpha * eps - sigma * x0 (SD2.x 768, some SDXL fine-tunes)."""

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = _per_sample(sigma, model_output)
        sd = self.sigma_data
        return model_input * sd**2 / (sigma**2 + sd**2) - model_output * sigma * sd / (sigma**2 + sd**2) ** 0.5


class EDM(V_PREDICTION):
    """Karras' EDM preconditioning (Playground 2.5, ContinuousEDM models)."""

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = _per_sample(sigma, model_output)
        sd = self.sigma_data
        return model_input * sd**2 / (sigma**2 + sd**2) + model_output * sigma * sd / (sigma**2 + sd**2) ** 0.5


class X0(EPS):
    """The network predicts the clean sample directly."""

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_output


class IMG_TO_IMG(X0):
    """x0 prediction from the unscaled input (Stable Cascade's stage B style)."""

    def calculate_input(self, sigma, noise):
        return noise


class LCM(EPS):
    """Latent consistency models: the EPS x0 blended with the input by the LCM boundary conditions.

    c_skip and c_out use sigma_data 0.5 and the timestep scaled by 10, so the
    prediction tends to the input at timestep 0.
    """

    def calculate_denoised(self, sigma, model_output, model_input):
        timestep = _per_sample(self.timestep(sigma), model_output)
        x0 = model_input - model_output * _per_sample(sigma, model_output)
        sigma_data = 0.5
        scaled = timestep * 10.0
        c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
        c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
        return c_out * x0 + c_skip * model_input


class COSMOS_RFLOW:
    """Cosmos' rectified flow in EDM sigma units: t = sigma / (sigma + 1)."""

    def calculate_input(self, sigma, noise):
        t = _per_sample(sigma / (sigma + 1), noise)
        return noise * (1.0 - t)

    def calculate_denoised(self, sigma, model_output, model_input):
        t = _per_sample(sigma / (sigma + 1), model_output)
        return model_input * (1.0 - t) - model_output * t

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        sigma = torch.as_tensor(sigma, dtype=noise.dtype, device=noise.device).reshape(-1)
        sigma = sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1))
        return noise * sigma + latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent


class CONST:
    """Rectified flow: x_sigma = (1 - sigma) * x0 + sigma * noise; the network predicts noise - x0."""

    def calculate_input(self, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noise

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_input - model_output * _per_sample(sigma, model_output)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        """``noise_scale`` (ModelNoiseScale; models trained on noise of another size than 1) multiplies the noise."""
        sigma = torch.as_tensor(sigma, dtype=noise.dtype, device=noise.device).reshape(-1)
        sigma = sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1))
        scale = getattr(self, "noise_scale", 1.0)
        return sigma * (noise * scale if scale != 1.0 else noise) + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma, latent):
        sigma = torch.as_tensor(sigma, dtype=latent.dtype, device=latent.device).reshape(-1)
        sigma = sigma.view(sigma.shape[:1] + (1,) * (latent.ndim - 1))
        return latent / (1.0 - sigma)


# --- schedules ---------------------------------------------------------------------------------


def make_beta_schedule(schedule: str, n_timestep: int, linear_start: float = 1e-4,
                       linear_end: float = 2e-2, cosine_s: float = 8e-3) -> torch.Tensor:
    """DDPM betas (float64) for the "linear" (scaled linear), "cosine", "sqrt_linear" and "sqrt" schedules."""
    if schedule == "linear":
        return torch.linspace(linear_start**0.5, linear_end**0.5, n_timestep, dtype=torch.float64) ** 2
    if schedule == "cosine":
        steps = torch.arange(n_timestep + 1, dtype=torch.float64) / n_timestep + cosine_s
        alphas = torch.cos(steps / (1 + cosine_s) * math.pi / 2).pow(2)
        alphas = alphas / alphas[0]
        return torch.clamp(1 - alphas[1:] / alphas[:-1], min=0, max=0.999)
    if schedule == "sqrt_linear":
        return torch.linspace(linear_start, linear_end, n_timestep, dtype=torch.float64)
    if schedule == "sqrt":
        return torch.linspace(linear_start, linear_end, n_timestep, dtype=torch.float64) ** 0.5
    raise ValueError(f"unknown beta schedule {schedule!r}")


def rescale_zero_terminal_snr_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """Shift and scale the schedule so the last timestep has zero SNR (Lin et al. 2023)."""
    alphas_cumprod = 1 / ((sigmas * sigmas) + 1)
    alphas_bar_sqrt = alphas_cumprod.sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas_bar[-1] = 4.8973451890853435e-08
    return ((1 - alphas_bar) / alphas_bar) ** 0.5


class ModelSamplingDiscrete(torch.nn.Module):
    """1000 discrete DDPM timesteps (SD1.x, SD2.x, SDXL); sigma -> nearest timestep in log space."""

    def __init__(self, model_config: Any = None, zsnr: bool | None = None) -> None:
        super().__init__()
        settings = getattr(model_config, "sampling_settings", None) or {}
        if zsnr is None:
            zsnr = settings.get("zsnr", False)
        self._register_schedule(
            beta_schedule=settings.get("beta_schedule", "linear"),
            linear_start=settings.get("linear_start", 0.00085),
            linear_end=settings.get("linear_end", 0.012),
            timesteps=settings.get("timesteps", 1000),
            zsnr=zsnr,
        )
        self.sigma_data = 1.0

    def _register_schedule(self, given_betas: torch.Tensor | None = None, beta_schedule: str = "linear",
                           timesteps: int = 1000, linear_start: float = 1e-4, linear_end: float = 2e-2,
                           cosine_s: float = 8e-3, zsnr: bool = False) -> None:
        betas = given_betas if given_betas is not None else make_beta_schedule(
            beta_schedule, timesteps, linear_start=linear_start, linear_end=linear_end, cosine_s=cosine_s)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.num_timesteps = int(betas.shape[0])
        self.linear_start, self.linear_end = linear_start, linear_end
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if zsnr:
            sigmas = rescale_zero_terminal_snr_sigmas(sigmas)
        self.set_sigmas(sigmas)

    def set_sigmas(self, sigmas: torch.Tensor) -> None:
        self.register_buffer("sigmas", sigmas.float())
        self.register_buffer("log_sigmas", sigmas.log().float())

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), min=0, max=len(self.sigmas) - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(timestep.device)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()


class ModelSamplingContinuousEDM(torch.nn.Module):
    """A continuous log-uniform sigma range; the network sees 0.25 * log(sigma)."""

    def __init__(self, model_config: Any = None) -> None:
        super().__init__()
        settings = getattr(model_config, "sampling_settings", None) or {}
        self.set_parameters(settings.get("sigma_min", 0.002), settings.get("sigma_max", 120.0),
                            settings.get("sigma_data", 1.0))

    def set_parameters(self, sigma_min: float, sigma_max: float, sigma_data: float) -> None:
        self.sigma_data = sigma_data
        sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), 1000).exp()
        self.register_buffer("sigmas", sigmas)
        self.register_buffer("log_sigmas", sigmas.log())

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return 0.25 * sigma.log()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return (timestep / 0.25).exp()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        log_min = math.log(float(self.sigma_min))
        return math.exp((math.log(float(self.sigma_max)) - log_min) * (1.0 - percent) + log_min)


class ModelSamplingContinuousV(ModelSamplingContinuousEDM):
    """Continuous sigmas fed as 2/pi * atan(sigma) (the v-prediction continuous parameterisation)."""

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma.atan() / math.pi * 2

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return (timestep * math.pi / 2).tan()


class ModelSamplingDiscreteDistilled(ModelSamplingDiscrete):
    """The 50 timesteps an LCM was distilled on (every 20th of the 1000), ending at timestep 999."""

    original_timesteps = 50

    def __init__(self, model_config: Any = None, zsnr: bool | None = None) -> None:
        super().__init__(model_config, zsnr=zsnr)
        self.skip_steps = self.num_timesteps // self.original_timesteps
        valid = torch.zeros(self.original_timesteps, dtype=torch.float32)
        for x in range(self.original_timesteps):
            valid[self.original_timesteps - 1 - x] = self.sigmas[self.num_timesteps - 1 - x * self.skip_steps]
        self.set_sigmas(valid)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        index = dists.abs().argmin(dim=0).view(sigma.shape)
        return (index * self.skip_steps + (self.skip_steps - 1)).to(sigma.device)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        t = ((timestep.float().to(self.log_sigmas.device) - (self.skip_steps - 1)) / self.skip_steps).float()
        t = torch.clamp(t, min=0, max=len(self.sigmas) - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(timestep.device)


class ModelSamplingCosmosRFlow(ModelSamplingContinuousEDM):
    """EDM sigmas fed to the network as the flow time sigma / (sigma + 1)."""

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma / (sigma + 1)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        sigma_max = self.sigma_max
        if timestep >= (sigma_max / (sigma_max + 1)):
            return sigma_max
        return timestep / (1 - timestep)


def time_snr_shift(alpha: float, t: Any) -> Any:
    """SD3's timestep shift: t' = alpha * t / (1 + (alpha - 1) * t)."""
    if alpha == 1.0:
        return t
    return alpha * t / (1 + (alpha - 1) * t)


class ModelSamplingDiscreteFlow(torch.nn.Module):
    """Rectified-flow sigmas in (0, 1] with SD3's shift; the network sees sigma * multiplier."""

    def __init__(self, model_config: Any = None) -> None:
        super().__init__()
        settings = getattr(model_config, "sampling_settings", None) or {}
        self.set_parameters(shift=settings.get("shift", 1.0), multiplier=settings.get("multiplier", 1000))
        self.noise_scale = float(settings.get("noise_scale", 1.0))

    def set_noise_scale(self, noise_scale: float) -> None:
        self.noise_scale = float(noise_scale)

    def set_parameters(self, shift: float = 1.0, timesteps: int = 1000, multiplier: float = 1000) -> None:
        self.shift = shift
        self.multiplier = multiplier
        ts = self.sigma((torch.arange(1, timesteps + 1, 1) / timesteps) * multiplier)
        self.register_buffer("sigmas", ts)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma * self.multiplier

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return time_snr_shift(self.shift, timestep / self.multiplier)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(time_snr_shift(self.shift, 1.0 - percent))


def flux_time_shift(mu: float, sigma: float, t: Any) -> Any:
    """Flux's resolution-dependent shift: e^mu / (e^mu + (1/t - 1)^sigma)."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)


class ModelSamplingFlux(torch.nn.Module):
    """Flux's flow sigmas: the timestep is sigma itself, shifted by ``shift`` (= mu)."""

    def __init__(self, model_config: Any = None) -> None:
        super().__init__()
        settings = getattr(model_config, "sampling_settings", None) or {}
        self.set_parameters(shift=settings.get("shift", 1.15))

    def set_parameters(self, shift: float = 1.15, timesteps: int = 10000) -> None:
        self.shift = shift
        ts = self.sigma(torch.arange(1, timesteps + 1, 1) / timesteps)
        self.register_buffer("sigmas", ts)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return flux_time_shift(self.shift, 1.0, timestep)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(flux_time_shift(self.shift, 1.0, 1.0 - percent))


class StableCascadeSampling(ModelSamplingDiscrete):
    """Stable Cascade's cosine schedule with an offset and shift, over continuous t in [0, 1]."""

    def __init__(self, model_config: Any = None) -> None:
        torch.nn.Module.__init__(self)
        settings = getattr(model_config, "sampling_settings", None) or {}
        self.set_parameters(settings.get("shift", 1.0))

    def set_parameters(self, shift: float = 1.0, cosine_s: float = 8e-3) -> None:
        self.shift = shift
        self.cosine_s = torch.tensor(cosine_s)
        self._init_alpha_cumprod = torch.cos(self.cosine_s / (1 + self.cosine_s) * torch.pi * 0.5) ** 2
        sigmas = torch.empty(10000)
        for x in range(10000):
            t = (x + 1) / 10000
            sigmas[x] = self.sigma(torch.tensor(t))
        self.set_sigmas(sigmas)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        alpha_cumprod = (torch.cos((timestep + self.cosine_s) / (1 + self.cosine_s) * torch.pi * 0.5) ** 2
                         / self._init_alpha_cumprod)
        if self.shift != 1.0:
            var = alpha_cumprod
            logSNR = (var / (1 - var)).log()
            logSNR += 2 * torch.log(1.0 / torch.tensor(self.shift))
            alpha_cumprod = logSNR.sigmoid()
        alpha_cumprod = alpha_cumprod.clamp(0.0001, 0.9999)
        return ((1 - alpha_cumprod) / alpha_cumprod) ** 0.5

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        var = 1 / ((sigma * sigma) + 1)
        var = var.clamp(0, 1.0)
        s, min_var = self.cosine_s.to(var.device), self._init_alpha_cumprod.to(var.device)
        return ((var * min_var) ** 0.5).acos() / (torch.pi * 0.5) * (1 + s) - s

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor(1.0 - percent)))


PREDICTIONS: dict[str, type] = {
    "eps": EPS, "v_prediction": V_PREDICTION, "edm": EDM, "x0": X0, "img_to_img": IMG_TO_IMG, "const": CONST,
    "lcm": LCM, "cosmos_rflow": COSMOS_RFLOW,
}


def combine(schedule: type, prediction: type, model_config: Any = None, **kwargs: Any) -> torch.nn.Module:
    """An instance of ``schedule`` that also has ``prediction``'s methods (ComfyUI's ModelSampling pattern)."""
    cls = type(f"ModelSampling{schedule.__name__}{prediction.__name__}", (schedule, prediction), {})
    return cls(model_config, **kwargs)
