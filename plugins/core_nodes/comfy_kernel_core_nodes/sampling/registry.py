"""Sampler names in KSampler's order and the function behind each."""

from __future__ import annotations

import importlib
from collections.abc import Callable

KSAMPLER_NAMES = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece",
]  # fmt: skip

SAMPLER_NAMES = KSAMPLER_NAMES + ["ddim", "uni_pc", "uni_pc_bh2"]

# name -> (module, function); ddim is Euler on its own schedule.
_TABLE: dict[str, tuple[str, str]] = {
    "euler": ("samplers_euler", "sample_euler"),
    "ddim": ("samplers_euler", "sample_euler"),
    "euler_cfg_pp": ("samplers_euler", "sample_euler_cfg_pp"),
    "euler_ancestral": ("samplers_euler", "sample_euler_ancestral"),
    "euler_ancestral_cfg_pp": ("samplers_euler", "sample_euler_ancestral_cfg_pp"),
    "heun": ("samplers_euler", "sample_heun"),
    "heunpp2": ("samplers_euler", "sample_heunpp2"),
    "dpm_2": ("samplers_euler", "sample_dpm_2"),
    "dpm_2_ancestral": ("samplers_euler", "sample_dpm_2_ancestral"),
    "lms": ("samplers_euler", "sample_lms"),
    "ddpm": ("samplers_euler", "sample_ddpm"),
    "lcm": ("samplers_euler", "sample_lcm"),
    "dpm_fast": ("dpm_solver", "sample_dpm_fast_on_sigmas"),
    "dpm_adaptive": ("dpm_solver", "sample_dpm_adaptive_on_sigmas"),
    "dpmpp_2s_ancestral": ("samplers_dpmpp", "sample_dpmpp_2s_ancestral"),
    "dpmpp_2s_ancestral_cfg_pp": ("samplers_dpmpp", "sample_dpmpp_2s_ancestral_cfg_pp"),
    "dpmpp_sde": ("samplers_dpmpp", "sample_dpmpp_sde"),
    "dpmpp_sde_gpu": ("samplers_dpmpp", "sample_dpmpp_sde_gpu"),
    "dpmpp_2m": ("samplers_dpmpp", "sample_dpmpp_2m"),
    "dpmpp_2m_cfg_pp": ("samplers_dpmpp", "sample_dpmpp_2m_cfg_pp"),
    "dpmpp_2m_sde": ("samplers_dpmpp", "sample_dpmpp_2m_sde"),
    "dpmpp_2m_sde_gpu": ("samplers_dpmpp", "sample_dpmpp_2m_sde_gpu"),
    "dpmpp_2m_sde_heun": ("samplers_dpmpp", "sample_dpmpp_2m_sde_heun"),
    "dpmpp_2m_sde_heun_gpu": ("samplers_dpmpp", "sample_dpmpp_2m_sde_heun_gpu"),
    "dpmpp_3m_sde": ("samplers_dpmpp", "sample_dpmpp_3m_sde"),
    "dpmpp_3m_sde_gpu": ("samplers_dpmpp", "sample_dpmpp_3m_sde_gpu"),
    "ipndm": ("samplers_multistep", "sample_ipndm"),
    "ipndm_v": ("samplers_multistep", "sample_ipndm_v"),
    "deis": ("samplers_multistep", "sample_deis"),
    "res_multistep": ("samplers_multistep", "sample_res_multistep"),
    "res_multistep_cfg_pp": ("samplers_multistep", "sample_res_multistep_cfg_pp"),
    "res_multistep_ancestral": ("samplers_multistep", "sample_res_multistep_ancestral"),
    "res_multistep_ancestral_cfg_pp": ("samplers_multistep", "sample_res_multistep_ancestral_cfg_pp"),
    "gradient_estimation": ("samplers_multistep", "sample_gradient_estimation"),
    "gradient_estimation_cfg_pp": ("samplers_multistep", "sample_gradient_estimation_cfg_pp"),
    "er_sde": ("samplers_sde", "sample_er_sde"),
    "seeds_2": ("samplers_sde", "sample_seeds_2"),
    "seeds_3": ("samplers_sde", "sample_seeds_3"),
    "sa_solver": ("samplers_sde", "sample_sa_solver"),
    "sa_solver_pece": ("samplers_sde", "sample_sa_solver_pece"),
    "uni_pc": ("uni_pc", "sample_unipc"),
    "uni_pc_bh2": ("uni_pc", "sample_unipc_bh2"),
}

SamplerFn = Callable[..., "torch.Tensor"]  # noqa: F821


def get_sampler(name: str) -> SamplerFn:
    """``fn(model, x, sigmas, extra_args=None, callback=None, disable=None)`` for a KSampler sampler name."""
    try:
        module, attr = _TABLE[name]
    except KeyError:
        raise ValueError(f"unknown sampler: {name!r}") from None
    return getattr(importlib.import_module(f"{__package__}.{module}"), attr)
