"""The GUIDER objects of the custom sampling nodes beyond plain CFG: positive only, two conditionings, Perp-Neg.

Node packs import these classes by ComfyUI's names (``Guider_Basic``,
``Guider_DualCFG`` from ``comfy_extras.nodes_custom_sampler``, ``Guider_PerpNeg``
from ``comfy_extras.nodes_perpneg``) and subclass them, so their attributes
and the conds keys they use are ComfyUI's.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .guider import CFGGuider, calc_cond_batch, cfg_function


def conditioning_set_values(conditioning: list, values: dict[str, Any]) -> list:
    """New entries with ``values`` set in a copy of each options dict (ComfyUI's ``node_helpers`` helper)."""
    return [[tensor, {**options, **values}] for tensor, options in conditioning]


class Guider_Basic(CFGGuider):
    """Positive conditioning only: the model's prediction for it, no guidance."""

    def set_conds(self, positive: list) -> None:  # type: ignore[override]
        self.inner_set_conds({"positive": positive})


class Guider_DualCFG(CFGGuider):
    """Two positive conditionings and a negative.

    ``regular``: cfg_cond2_negative guides cond2 away from the negative and
    cfg_conds adds cond1's difference to cond2 on top; ``nested``: cond1 is
    guided against cond2 first, and that result against the negative.
    """

    def set_cfg(self, cfg1: float, cfg2: float, nested: bool = False) -> None:  # type: ignore[override]
        self.cfg1 = cfg1
        self.cfg2 = cfg2
        self.nested = nested

    def set_conds(self, positive: list, middle: list, negative: list) -> None:  # type: ignore[override]
        middle = conditioning_set_values(middle, {"prompt_type": "negative"})
        self.inner_set_conds({"positive": positive, "middle": middle, "negative": negative})

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict[str, Any] | None = None,
                      seed: int | None = None) -> torch.Tensor:
        model_options = model_options or {}
        negative = self.conds.get("negative")
        middle = self.conds.get("middle")
        positive = self.conds.get("positive")
        if self.nested:
            out = calc_cond_batch(self.inner_model, [negative, middle, positive], x, timestep, model_options)
            pred_text = cfg_function(self.inner_model, out[2], out[1], self.cfg1, x, timestep,
                                     model_options=model_options, cond=positive, uncond=middle)
            return out[0] + self.cfg2 * (pred_text - out[0])
        if not model_options.get("disable_cfg1_optimization", False) and math.isclose(self.cfg2, 1.0):
            negative = None
            if math.isclose(self.cfg1, 1.0):
                middle = None
        out = calc_cond_batch(self.inner_model, [negative, middle, positive], x, timestep, model_options)
        return cfg_function(self.inner_model, out[1], out[0], self.cfg2, x, timestep, model_options=model_options,
                            cond=middle, uncond=negative) + (out[2] - out[1]) * self.cfg1


def perp_neg(x: torch.Tensor, noise_pred_pos: torch.Tensor, noise_pred_neg: torch.Tensor,
             noise_pred_nocond: torch.Tensor, neg_scale: float, cond_scale: float) -> torch.Tensor:
    """Perp-Neg guidance: only the part of the negative direction perpendicular to the positive one is removed.

    Directions are taken from the empty-prompt prediction; the projection is over the
    whole batch at once (one dot product), as in the reference.
    """
    pos = noise_pred_pos - noise_pred_nocond
    neg = noise_pred_neg - noise_pred_nocond
    perp = neg - (torch.mul(neg, pos).sum() / torch.norm(pos) ** 2) * pos
    return noise_pred_nocond + cond_scale * (pos - perp * neg_scale)


class Guider_PerpNeg(CFGGuider):
    """Positive, negative and empty conditioning evaluated in one batch and combined with :func:`perp_neg`."""

    def set_conds(self, positive: list, negative: list, empty_negative_prompt: list) -> None:  # type: ignore[override]
        empty = conditioning_set_values(empty_negative_prompt, {"prompt_type": "negative"})
        self.inner_set_conds({"positive": positive, "empty_negative_prompt": empty, "negative": negative})

    def set_cfg(self, cfg: float, neg_scale: float) -> None:  # type: ignore[override]
        self.cfg = cfg
        self.neg_scale = neg_scale

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict[str, Any] | None = None,
                      seed: int | None = None) -> torch.Tensor:
        model_options = model_options or {}
        positive = self.conds.get("positive")
        negative = self.conds.get("negative")
        empty = self.conds.get("empty_negative_prompt")
        if not model_options.get("disable_cfg1_optimization", False) and math.isclose(self.neg_scale, 0.0):
            negative = None
            if math.isclose(self.cfg, 1.0):
                empty = None
        conds = [positive, negative, empty]
        out = calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        # sampling_function is bypassed (one batch for three predictions), so its hooks run here
        for fn in model_options.get("sampler_pre_cfg_function", []):
            out = fn({"conds": conds, "conds_out": out, "cond_scale": self.cfg, "timestep": timestep, "input": x,
                      "sigma": timestep, "model": self.inner_model, "model_options": model_options})
        pos_pred, neg_pred, empty_pred = out
        result = perp_neg(x, pos_pred, neg_pred, empty_pred, self.neg_scale, self.cfg)
        for fn in model_options.get("sampler_post_cfg_function", []):
            result = fn({"denoised": result, "cond": positive, "uncond": negative, "cond_scale": self.cfg,
                         "model": self.inner_model, "uncond_denoised": neg_pred, "cond_denoised": pos_pred,
                         "sigma": timestep, "model_options": model_options, "input": x,
                         "empty_cond": empty, "empty_cond_denoised": empty_pred})
        return result


def cfg_override(cfg: float, sigma_high: float, sigma_low: float) -> Any:
    """A ``predict_noise`` wrapper: the guider's cfg is ``cfg`` while sigma_low < sigma <= sigma_high.

    Each override wraps the ones added before it (a later CFG Override node
    clones the MODEL and appends its wrapper), so where ranges overlap the
    override nearest the sampler sets the value last and wins. At cfg 1 the
    negative pass is skipped, as with any cfg 1.
    """

    def wrapper(executor: Any, x: torch.Tensor, timestep: torch.Tensor, model_options: dict[str, Any],
                seed: int | None) -> torch.Tensor:
        if not sigma_low < float(timestep.flatten()[0]) <= sigma_high:
            return executor(x, timestep, model_options, seed)
        guider = executor.class_obj
        previous = guider.cfg
        guider.cfg = cfg
        try:
            return executor(x, timestep, model_options, seed)
        finally:
            guider.cfg = previous

    return wrapper


class Guider_DualModel(CFGGuider):
    """CFG whose positive pass runs one MODEL and whose negative pass runs another.

    Models distilled with a separate unconditional network use this. The
    negative model is loaded, and the negative conditioning prepared with it,
    only when cfg is not 1; a step whose cfg is 1 (CFG Override) returns the
    positive prediction as it is. The negative pass shares the positive
    model's options (its patches and wrappers).
    """

    def __init__(self, model_patcher: Any, uncond_model_patcher: Any) -> None:
        super().__init__(model_patcher)
        self.uncond_model_patcher = uncond_model_patcher
        self.uncond_inner: Any = None

    def outer_sample(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if math.isclose(self.cfg, 1.0):
            self.uncond_inner = None
            return super().outer_sample(*args, **kwargs)
        with self.uncond_model_patcher.use() as model:
            model.current_patcher = self.uncond_model_patcher
            self.uncond_inner = model
            self._uncond_negative = [dict(c) for c in self.conds["negative"]]
            self.uncond_model_patcher.pre_run()
            try:
                return super().outer_sample(*args, **kwargs)
            finally:
                self.uncond_model_patcher.cleanup()
                self.uncond_inner = None

    def inner_sample(self, noise: torch.Tensor, latent_image: torch.Tensor, device: Any, sampler: Any,
                     sigmas: torch.Tensor, denoise_mask: torch.Tensor | None, callback: Any, disable_pbar: bool,
                     seed: int | None, **kwargs: Any) -> torch.Tensor:
        from .guider import process_conds

        if self.uncond_inner is not None:
            latent = latent_image
            if latent is not None and torch.count_nonzero(latent) > 0:
                latent = self.uncond_inner.process_latent_in(latent)
            self._uncond_conds = process_conds(self.uncond_inner, noise, {"negative": self._uncond_negative},
                                               device, latent, denoise_mask, seed, **kwargs)["negative"]
        return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                    disable_pbar, seed, **kwargs)

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict[str, Any] | None = None,
                      seed: int | None = None) -> torch.Tensor:
        model_options = model_options or {}
        positive = self.conds.get("positive")
        cond = calc_cond_batch(self.inner_model, [positive], x, timestep, model_options)[0]
        if self.uncond_inner is None or (math.isclose(self.cfg, 1.0)
                                         and not model_options.get("disable_cfg1_optimization", False)):
            return cond
        uncond = calc_cond_batch(self.uncond_inner, [self._uncond_conds], x, timestep, model_options)[0]
        return cfg_function(self.inner_model, cond, uncond, self.cfg, x, timestep, model_options=model_options,
                            cond=positive, uncond=self._uncond_conds)
