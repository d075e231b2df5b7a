"""Constants and small helpers shared by the node modules (no torch at import time)."""

from __future__ import annotations

from typing import NamedTuple

MAX_RESOLUTION = 16384
SEED_MAX = 0xFFFFFFFFFFFFFFFF

#: KSampler's combo values, in ComfyUI's order. Kept as literals so that
#: /object_info never needs torch; a test checks them against the sampling package.
SAMPLER_NAMES = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)
SCHEDULER_NAMES = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
    "kl_optimal",
)


class AnyType(str):
    """The ``*`` type: a str whose ``!=`` is always False, so every link type matches it."""

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


ANY = AnyType("*")


class NodeDef(NamedTuple):
    """One core node as a category module lists it in its ``NODES``.

    ``python_module`` is the ComfyUI module the node lives in (``"nodes"`` or
    ``"comfy_extras.nodes_<area>"``): /object_info reports it and the frontend
    groups core nodes by it. ``display_name`` None means the node has none (the
    frontend shows its name), as for a few of ComfyUI's nodes.
    """

    name: str
    cls: type
    display_name: str | None
    python_module: str = "nodes"
