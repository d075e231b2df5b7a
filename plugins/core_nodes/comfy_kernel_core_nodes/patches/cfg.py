"""Guidance formulas: functions for the cfg, pre-cfg and post-cfg patch points.

* cfg functions (``set_model_sampler_cfg_function``) get ``cond``/``uncond`` as
  noise predictions (x - denoised) and return the guided noise;
* pre-cfg functions get ``conds_out`` (denoised predictions, positive first)
  and return a changed list;
* post-cfg functions get the guided ``denoised`` and return a changed one.

The arithmetic follows ComfyUI's operation order, so results agree to float
rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

Args = dict[str, Any]


def rescale_cfg(multiplier: float) -> Callable[[Args], torch.Tensor]:
    """RescaleCFG (Lin et al. 2023): CFG in v-space, its std rescaled to the positive's, blended by ``multiplier``."""

    def cfg(args: Args) -> torch.Tensor:
        cond, uncond, cond_scale = args["cond"], args["uncond"], args["cond_scale"]
        sigma = args["sigma"]
        sigma = sigma.view(sigma.shape[:1] + (1,) * (cond.ndim - 1))
        x_orig = args["input"]
        x = x_orig / (sigma * sigma + 1.0)
        v_cond = ((x - (x_orig - cond)) * (sigma**2 + 1.0) ** 0.5) / sigma
        v_uncond = ((x - (x_orig - uncond)) * (sigma**2 + 1.0) ** 0.5) / sigma
        x_cfg = v_uncond + cond_scale * (v_cond - v_uncond)
        ro_pos = torch.std(v_cond, dim=(1, 2, 3), keepdim=True)
        ro_cfg = torch.std(x_cfg, dim=(1, 2, 3), keepdim=True)
        x_rescaled = x_cfg * (ro_pos / ro_cfg)
        x_final = multiplier * x_rescaled + (1.0 - multiplier) * x_cfg
        return x_orig - (x - x_final * sigma / (sigma * sigma + 1.0) ** 0.5)

    return cfg


def optimized_scale(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Per batch item, the projection coefficient of ``positive`` on ``negative`` (CFG-Zero*'s s*)."""
    positive_flat = positive.reshape(positive.shape[0], -1)
    negative_flat = negative.reshape(negative.shape[0], -1)
    dot = torch.sum(positive_flat * negative_flat, dim=1, keepdim=True)
    squared_norm = torch.sum(negative_flat**2, dim=1, keepdim=True) + 1e-8
    return (dot / squared_norm).reshape([positive.shape[0]] + [1] * (positive.ndim - 1))


def cfg_zero_star(args: Args) -> torch.Tensor:
    """CFG-Zero* (Fan et al. 2025): the unconditional prediction scaled by s* before guidance (post-cfg)."""
    scale = args["cond_scale"]
    x = args["input"]
    cond_p, uncond_p = args["cond_denoised"], args["uncond_denoised"]
    alpha = optimized_scale(x - cond_p, x - uncond_p)
    return args["denoised"] + uncond_p * (alpha - 1.0) + scale * uncond_p * (1.0 - alpha)


def cfg_norm(strength: float) -> Callable[[Args], torch.Tensor]:
    """Caps the guided prediction's per-pixel channel norm at the positive prediction's, times ``strength``."""

    def post_cfg(args: Args) -> torch.Tensor:
        cond_p, pred = args["cond_denoised"], args["denoised"]
        norm_cond = torch.norm(cond_p, dim=1, keepdim=True)
        norm_pred = torch.norm(pred, dim=1, keepdim=True)
        scale = (norm_cond / (norm_pred + 1e-8)).clamp(min=0.0, max=1.0)
        return pred * scale * strength

    return post_cfg


def _project(v0: torch.Tensor, v1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    v1 = F.normalize(v1, dim=[-1, -2, -3])
    parallel = (v0 * v1).sum(dim=[-1, -2, -3], keepdim=True) * v1
    return parallel, v0 - parallel


def apg(eta: float, norm_threshold: float, momentum: float) -> Callable[[Args], list]:
    """Adaptive Projected Guidance (Sadat et al. 2024), as a pre-cfg function.

    The guidance (cond - uncond) gets an optional running average (``momentum``,
    reset when sigma goes up, i.e. a new sampling run), its norm capped at
    ``norm_threshold``, and its part parallel to the positive prediction scaled
    by ``eta``. The positive is rewritten so that the plain CFG that follows
    yields exactly that guidance.
    """
    state: dict[str, Any] = {"running_avg": 0, "prev_sigma": None}

    def pre_cfg(args: Args) -> list:
        if len(args["conds_out"]) == 1:
            return args["conds_out"]
        cond, uncond = args["conds_out"][0], args["conds_out"][1]
        sigma = args["sigma"][0]
        cond_scale = args["cond_scale"]
        if state["prev_sigma"] is not None and sigma > state["prev_sigma"]:
            state["running_avg"] = 0
        state["prev_sigma"] = sigma
        guidance = cond - uncond
        if momentum != 0:
            if not torch.is_tensor(state["running_avg"]):
                state["running_avg"] = guidance
            else:
                state["running_avg"] = momentum * state["running_avg"] + guidance
            guidance = state["running_avg"]
        if norm_threshold > 0:
            norm = guidance.norm(p=2, dim=[-1, -2, -3], keepdim=True)
            guidance = guidance * torch.minimum(torch.ones_like(norm), norm_threshold / norm)
        parallel, orthogonal = _project(guidance, cond)
        modified = orthogonal + eta * parallel
        return [(uncond + modified) + (cond - uncond) / cond_scale, uncond] + args["conds_out"][2:]

    return pre_cfg


def mahiro(args: Args) -> torch.Tensor:
    """Mahiro: leans the guided result towards the scaled positive when it points away from the negative."""
    scale = args["cond_scale"]
    leap = args["cond_denoised"] * scale
    u_leap = args["uncond_denoised"] * scale
    cfg = args["denoised"]
    merge = (leap + cfg) / 2
    normu = torch.sqrt(u_leap.abs()) * u_leap.sign()
    normm = torch.sqrt(merge.abs()) * merge.sign()
    sim = F.cosine_similarity(normu, normm).mean()
    simsc = 2 * (sim + 1)
    return (simsc * cfg + (4 - simsc) * leap) / 4


def score_tangential_damping(cond_score: torch.Tensor, uncond_score: torch.Tensor) -> torch.Tensor:
    """The unconditional score projected on the first right-singular vector of [uncond; cond] (TCFG)."""
    batch = cond_score.shape[0]
    cond_flat = cond_score.reshape(batch, 1, -1).float()
    uncond_flat = uncond_score.reshape(batch, 1, -1).float()
    matrix = torch.cat((uncond_flat, cond_flat), dim=1)
    try:
        _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    except RuntimeError:  # some devices lack an SVD kernel
        _, _, vh = torch.linalg.svd(matrix.cpu(), full_matrices=False)
    v1 = vh[:, 0:1, :].to(uncond_flat.device)
    damped = (uncond_flat @ v1.transpose(-2, -1)) * v1
    return damped.reshape_as(uncond_score).to(uncond_score.dtype)


def tcfg(args: Args) -> list:
    """Tangential Damping CFG (pre-cfg): the negative keeps only its component along the shared direction."""
    x = args["input"]
    conds_out = args["conds_out"]
    if len(conds_out) <= 1 or None in args["conds"][:2]:
        return conds_out
    cond_pred, uncond_pred = conds_out[0], conds_out[1]
    uncond_td = score_tangential_damping(x - cond_pred, x - uncond_pred)
    return [cond_pred, x - uncond_td] + conds_out[2:]


def epsilon_scaling(scaling_factor: float) -> Callable[[Args], torch.Tensor]:
    """Epsilon Scaling (Ning et al. 2023, uniform schedule): the guided noise divided by ``scaling_factor``."""
    if scaling_factor == 0:
        scaling_factor = 1e-9

    def post_cfg(args: Args) -> torch.Tensor:
        x = args["input"]
        return x - (x - args["denoised"]) / scaling_factor

    return post_cfg


def temporal_score_rescaling(tsr_k: float, tsr_sigma: float) -> Callable[[Args], torch.Tensor]:
    """TSR (arXiv 2510.01184, eq. 6): the predicted noise scaled by r(SNR), which goes from 1 at high noise to k.

    Written as the denoised estimate x0' with x = alpha * x0 + sigma * eps and eps
    rescaled by r: x0' = lerp(x / alpha, x0, r). Flow models have alpha = 1 - sigma,
    the others alpha = 1; k = 1 or sigma = 0 leave the prediction as it is.
    """
    variance = tsr_sigma**2

    def post_cfg(args: Args) -> torch.Tensor:
        from ..model.model_sampling import CONST

        denoised, x, sigma = args["denoised"], args["input"], args["sigma"]
        if tsr_k == 1 or bool((sigma == 0).all()):
            return denoised
        model_sampling = args["model"].current_patcher.get_model_object("model_sampling")
        half_log_snr = sigma.logit().neg() if isinstance(model_sampling, CONST) else sigma.log().neg()
        snr = (2 * half_log_snr).exp()
        if bool((snr == 0).all()):
            return denoised
        ratio = (snr * variance + 1) / (snr * variance / tsr_k + 1)
        ratio = torch.where(torch.isposinf(snr), torch.full_like(ratio, tsr_k), ratio)
        shape = (-1,) + (1,) * (denoised.ndim - 1)
        alpha = (sigma * half_log_snr.exp()).reshape(shape)
        return torch.lerp(x / alpha, denoised, ratio.reshape(shape).to(denoised.dtype))

    return post_cfg


def fourier_scale(x: torch.Tensor, scale_low: float = 1.0, scale_high: float = 1.5,
                  freq_cutoff: int = 20) -> torch.Tensor:
    """``x`` with its low spatial frequencies (within ``freq_cutoff`` of the centre) scaled by ``scale_low``
    and the others by ``scale_high`` (FreSca)."""
    dtype, device = x.dtype, x.device
    x = x.to(torch.float32)
    freq = torch.fft.fftshift(torch.fft.fftn(x, dim=(-2, -1)), dim=(-2, -1))
    mask = torch.ones(freq.shape, device=device) * scale_high
    centre = mask
    for d in range(len(freq.shape) - 2):
        dim = d + 2
        cc = freq.shape[dim] // 2
        f_c = min(freq_cutoff, cc)
        centre = centre.narrow(dim, cc - f_c, f_c * 2)
    centre[:] = scale_low
    freq = torch.fft.ifftshift(freq * mask, dim=(-2, -1))
    return torch.fft.ifftn(freq, dim=(-2, -1)).real.to(dtype)


def fresca(scale_low: float, scale_high: float, freq_cutoff: int) -> Callable[[Args], list]:
    """FreSca (pre-cfg): the guidance (cond - uncond) rescaled per frequency band."""

    def pre_cfg(args: Args) -> list:
        conds_out = args["conds_out"]
        if len(conds_out) <= 1 or None in args["conds"][:2]:
            return conds_out
        cond, uncond = conds_out[0], conds_out[1]
        guidance = fourier_scale(cond - uncond, scale_low=scale_low, scale_high=scale_high, freq_cutoff=freq_cutoff)
        return [guidance + uncond, uncond] + conds_out[2:]

    return pre_cfg


def video_linear_cfg(min_cfg: float) -> Callable[[Args], torch.Tensor]:
    """CFG rising linearly from ``min_cfg`` on the first frame (batch item) to the node's cfg on the last."""

    def cfg(args: Args) -> torch.Tensor:
        cond, uncond, cond_scale = args["cond"], args["uncond"], args["cond_scale"]
        scale = torch.linspace(min_cfg, cond_scale, cond.shape[0], device=cond.device)
        return uncond + scale.reshape((cond.shape[0], 1, 1, 1)) * (cond - uncond)

    return cfg


def video_triangle_cfg(min_cfg: float) -> Callable[[Args], torch.Tensor]:
    """CFG from ``min_cfg`` at both ends of the frames up to the node's cfg in the middle."""

    def cfg(args: Args) -> torch.Tensor:
        cond, uncond, cond_scale = args["cond"], args["uncond"], args["cond_scale"]
        period = 1.0
        values = torch.linspace(0, 1, cond.shape[0], device=cond.device)
        values = 2 * (values / period - torch.floor(values / period + 0.5)).abs()
        scale = (values * (cond_scale - min_cfg) + min_cfg).reshape((cond.shape[0], 1, 1, 1))
        return uncond + scale * (cond - uncond)

    return cfg


def latent_operation_cfg(operation: Callable[..., torch.Tensor]) -> Callable[[Args], list]:
    """Applies a LATENT_OPERATION to the guidance (cond - uncond), or to the prediction when there is no negative."""

    def pre_cfg(args: Args) -> list:
        conds_out = args["conds_out"]
        if len(conds_out) == 2:
            conds_out[0] = operation(latent=(conds_out[0] - conds_out[1])) + conds_out[1]
        else:
            conds_out[0] = operation(latent=conds_out[0])
        return conds_out

    return pre_cfg
