"""Classifier-free guidance around an abstract denoiser.

The guided prediction is uncond + (cond - uncond) * cfg on the denoised (x0)
outputs. Positive and negative run as one batch (negative first) because that
is both faster and what the reference does; batching changes results by ~1e-6.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ResultHook = Callable[[dict[str, Any]], None]


def combine_cfg(cond: torch.Tensor, uncond: torch.Tensor, cfg: float) -> torch.Tensor:
    return uncond + (cond - uncond) * cfg


def _fit_batch(context: torch.Tensor, batch: int) -> torch.Tensor:
    if context.shape[0] == batch:
        return context
    if batch % context.shape[0]:
        raise ValueError(f"conditioning batch {context.shape[0]} does not divide latent batch {batch}")
    return context.repeat(batch // context.shape[0], *([1] * (context.ndim - 1)))


def _fit_tokens(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat both contexts to a common token count so they can share a batch.

    Repeating keys and values unchanged leaves softmax attention's result
    unchanged, so this is exact up to rounding.
    """
    if a.ndim < 3 or a.shape[1] == b.shape[1]:
        return a, b
    n = math.lcm(a.shape[1], b.shape[1])
    return a.repeat(1, n // a.shape[1], 1), b.repeat(1, n // b.shape[1], 1)


class CFGDenoiser:
    """``model(x, sigma) -> guided denoised`` over ``model_fn(x, sigma, context) -> denoised``.

    With cfg == 1 the negative is skipped unless a sampler asks for it through
    :meth:`with_uncond` (the CFG++ samplers step along the unconditional
    prediction). ``on_result`` receives every evaluation's inputs and outputs.
    """

    def __init__(
        self,
        model_fn: ModelFn,
        positive: torch.Tensor,
        negative: torch.Tensor | None,
        cfg: float,
        on_result: ResultHook | None = None,
    ) -> None:
        self.model_fn = model_fn
        self.positive = positive
        self.negative = negative
        self.cfg = float(cfg)
        self.on_result = on_result

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.evaluate(x, sigma, need_uncond=False)[0]

    def with_uncond(
        self, x: torch.Tensor, sigma: torch.Tensor, **_: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided and unconditional denoised predictions, the negative always evaluated."""
        return self.evaluate(x, sigma, need_uncond=True)

    def evaluate(
        self, x: torch.Tensor, sigma: torch.Tensor, need_uncond: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(batch)
        pos = _fit_batch(self.positive.to(x.device), batch)
        skip_negative = self.negative is None or (math.isclose(self.cfg, 1.0) and not need_uncond)
        if skip_negative:
            cond = self.model_fn(x, sigma, pos)
            uncond = cond if self.negative is None else None
            denoised = cond
        else:
            neg = _fit_batch(self.negative.to(x.device), batch)
            neg, pos = _fit_tokens(neg, pos)
            out = self.model_fn(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([neg, pos]))
            uncond, cond = out[:batch], out[batch:]
            denoised = combine_cfg(cond, uncond, self.cfg)
        if self.on_result is not None:
            self.on_result(
                {
                    "x": x,
                    "sigma": sigma,
                    "cond_denoised": cond,
                    "uncond_denoised": uncond,
                    "denoised": denoised,
                }
            )
        return denoised, (uncond if uncond is not None else torch.zeros_like(cond))


def denoise_with_uncond(
    model: Callable[..., torch.Tensor], x: torch.Tensor, sigma: torch.Tensor, extra_args: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """For CFG++ samplers: the guided and the unconditional prediction.

    A plain unguided model has no separate unconditional branch; its own
    prediction then stands for both.
    """
    fn = getattr(model, "with_uncond", None)
    if fn is not None:
        return fn(x, sigma, **extra_args)
    denoised = model(x, sigma, **extra_args)
    return denoised, denoised
