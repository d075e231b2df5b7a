"""Samplers offered only through their own nodes: LCM with progressive upscaling, and the alternative Euler CFG++.

Same calling convention as every sampler here:
``fn(model, x, sigmas, extra_args, callback, disable, **options)``.
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import ones, report, to_d


@torch.no_grad()
def sample_lcm_upscale(model, x, sigmas, extra_args=None, callback=None, disable=None, total_upscale=2.0,
                       upscale_method="bislerp", upscale_steps=None):
    """LCM steps whose x0 estimate is enlarged a little after each of the first steps, up to ``total_upscale``.

    ``upscale_steps`` (default: about half the steps) is how many steps share the
    enlargement; the fresh noise of each step is drawn from torch's global
    generator (``randn_like``), as the reference does.
    """
    from comfy_kernel.nodes.resize import common_upscale

    extra_args = extra_args or {}
    if upscale_steps is None:
        upscale_steps = max(len(sigmas) // 2 + 1, 2)
    else:
        upscale_steps = min(upscale_steps + 1, len(sigmas) + 1)
    factors = np.linspace(1.0, total_upscale, upscale_steps)[1:]
    height, width = x.shape[-2], x.shape[-1]
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        report(callback, x, i, sigmas[i], denoised)
        x = denoised
        if i < len(factors):
            x = common_upscale(x, round(width * factors[i]), round(height * factors[i]), upscale_method, "disabled")
        if sigmas[i + 1] > 0:
            x += sigmas[i + 1] * torch.randn_like(x)
    return x


@torch.no_grad()
def sample_euler_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Euler CFG++, the "alternative" form: the step direction uses the unconditional prediction.

    d = (x - denoised + uncond) - denoised over sigma, i.e. the guided x0 with the
    unconditional noise estimate (the model must run a negative, even at cfg 1).
    """
    from ..model.patcher import set_model_options_post_cfg_function

    extra_args = dict(extra_args or {})
    seen: list[torch.Tensor] = []

    def keep_uncond(args):
        seen.append(args["uncond_denoised"])
        return args["denoised"]

    options = dict(extra_args.get("model_options") or {})
    extra_args["model_options"] = set_model_options_post_cfg_function(options, keep_uncond,
                                                                      disable_cfg1_optimization=True)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones(x), **extra_args)
        uncond = seen[-1] if seen else 0.0  # a bare denoiser has no unconditional branch
        d = to_d(x - denoised + uncond, sigmas[i], denoised)
        report(callback, x, i, sigmas[i], denoised)
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x
