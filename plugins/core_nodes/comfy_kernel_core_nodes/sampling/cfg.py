"""Classifier-free guidance helpers the samplers share.

The CFG++ samplers step along the *unconditional* prediction, which the
guider computes anyway. They ask for it the way ComfyUI's do: by adding a
post-CFG function to the evaluation's ``model_options`` that records the
unconditional prediction (and forcing the negative to run even at cfg 1), so
the trick works with every guider, including those of node packs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def combine_cfg(cond: torch.Tensor, uncond: torch.Tensor, cfg: float) -> torch.Tensor:
    return uncond + (cond - uncond) * cfg


def denoise_with_uncond(model: Callable[..., torch.Tensor], x: torch.Tensor, sigma: torch.Tensor,
                        extra_args: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The guided and the unconditional denoised predictions of one evaluation.

    A model that ignores ``model_options`` (a bare denoising function) has no
    separate unconditional branch; its own prediction then stands for both.
    """
    from ..model.patcher import set_model_options_post_cfg_function

    seen: list[torch.Tensor] = []

    def keep_uncond(args: dict[str, Any]) -> torch.Tensor:
        seen.append(args["uncond_denoised"])
        return args["denoised"]

    options = dict(extra_args.get("model_options") or {})
    args = dict(extra_args)
    args["model_options"] = set_model_options_post_cfg_function(options, keep_uncond,
                                                                disable_cfg1_optimization=True)
    denoised = model(x, sigma, **args)
    return denoised, (seen[-1] if seen else denoised)
