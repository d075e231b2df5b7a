"""CONDITIONING lists -> what the sampler's ``model_fn`` evaluates.

The common case (one entry per side, no area, no mask, strength 1) hands the
sampling package plain context tensors, so positive and negative run as one
batch exactly like the reference. Anything richer (several entries from
ConditioningCombine, ConditioningSetArea, ConditioningSetMask, a strength)
takes the composite path: the sampler gets one-number "selector" contexts
(1 = positive, 0 = negative) and the wrapped model function evaluates every
entry of the selected side on its area and blends the denoised predictions
with weights strength x mask (areas without a mask get an 8-latent-pixel
feathered edge where they do not touch the border), dividing by the summed
weights, which is how ComfyUI combines conditionings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
FEATHER = 8


@dataclass
class Entry:
    context: torch.Tensor
    area: tuple[int, int, int, int] | None  # (h, w, y, x) in latent units
    mask: torch.Tensor | None
    strength: float


def _is_plain(conditioning: list[list[Any]]) -> bool:
    if len(conditioning) != 1:
        return False
    opts = conditioning[0][1]
    return opts.get("area") is None and opts.get("mask") is None and float(opts.get("strength", 1.0)) == 1.0


def _mask_bounds(mask: torch.Tensor, h: int, w: int) -> tuple[int, int, int, int] | None:
    resized = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=(h, w), mode="bilinear")
    nz = torch.nonzero(resized.amax(dim=(0, 1)) > 0)
    if len(nz) == 0:
        return None
    y0, x0 = nz.min(dim=0).values.tolist()
    y1, x1 = nz.max(dim=0).values.tolist()
    return (y1 - y0 + 1, x1 - x0 + 1, y0, x0)


def _entries(conditioning: list[list[Any]], latent_shape: torch.Size) -> list[Entry]:
    h, w = latent_shape[2], latent_shape[3]
    out = []
    for tensor, opts in conditioning:
        area = opts.get("area")
        mask = opts.get("mask")
        strength = float(opts.get("strength", 1.0))
        if mask is not None:
            strength *= float(opts.get("mask_strength", 1.0))
            if opts.get("set_area_to_bounds"):
                area = _mask_bounds(mask, h, w)
        if area is not None:
            ah, aw, ay, ax = (int(v) for v in area)
            ay, ax = min(ay, h - 1), min(ax, w - 1)
            area = (max(1, min(ah, h - ay)), max(1, min(aw, w - ax)), ay, ax)
        out.append(Entry(tensor, area, mask, strength))
    return out


def _weight(entry: Entry, shape: torch.Size, device: torch.device) -> tuple[torch.Tensor, slice, slice]:
    b, c, h, w = shape
    ah, aw, ay, ax = entry.area if entry.area is not None else (h, w, 0, 0)
    ys, xs = slice(ay, ay + ah), slice(ax, ax + aw)
    weight = torch.full((1, 1, ah, aw), entry.strength, device=device)
    if entry.mask is not None:
        m = F.interpolate(entry.mask.reshape(-1, 1, *entry.mask.shape[-2:]).float().to(device), size=(h, w),
                          mode="bilinear")
        if m.shape[0] not in (1, b):
            m = m[:1]
        weight = weight * m[:, :, ys, xs]
    elif entry.area is not None:
        for t in range(FEATHER):
            k = min(1.0, (t + 1) / FEATHER)
            if ay != 0 and t < ah:
                weight[:, :, t, :] *= k
            if ay + ah < h and t < ah:
                weight[:, :, ah - 1 - t, :] *= k
            if ax != 0 and t < aw:
                weight[:, :, :, t] *= k
            if ax + aw < w and t < aw:
                weight[:, :, :, aw - 1 - t] *= k
    return weight, ys, xs


def _fit(context: torch.Tensor, batch: int) -> torch.Tensor:
    if context.shape[0] == batch:
        return context
    return context.repeat(-(-batch // context.shape[0]), 1, 1)[:batch]


def _blend(model_fn: ModelFn, entries: list[Entry], x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    total = torch.full_like(x, 1e-37)
    for entry in entries:
        weight, ys, xs = _weight(entry, x.shape, x.device)
        part = x[:, :, ys, xs]
        denoised = model_fn(part, sigma, _fit(entry.context.to(x.device), x.shape[0]))
        out[:, :, ys, xs] += denoised * weight
        total[:, :, ys, xs] += weight
    return out / total


def prepare(model_fn: ModelFn, positive: list[list[Any]], negative: list[list[Any]] | None,
            latent_shape: torch.Size) -> tuple[ModelFn, torch.Tensor, torch.Tensor | None]:
    """``(model_fn, positive, negative)`` arguments for :func:`sampling.sample`."""
    plain = _is_plain(positive) and (negative is None or _is_plain(negative))
    if plain:
        return model_fn, positive[0][0], (negative[0][0] if negative is not None else None)
    sides = {1: _entries(positive, latent_shape), 0: _entries(negative or [], latent_shape)}

    def composite(x: torch.Tensor, sigma: torch.Tensor, selector: torch.Tensor) -> torch.Tensor:
        choice = selector.reshape(selector.shape[0], -1)[:, 0].round().long().tolist()
        out = torch.empty_like(x)
        for side in (0, 1):
            rows = [i for i, s in enumerate(choice) if s == side]
            if not rows:
                continue
            idx = torch.tensor(rows, device=x.device)
            out[idx] = _blend(model_fn, sides[side], x[idx], sigma[idx])
        return out

    selector_neg = torch.zeros(1, 1, 1) if negative is not None else None
    return composite, torch.ones(1, 1, 1), selector_neg
