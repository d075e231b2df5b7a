"""Tensor helpers shared by the IMAGE and MASK nodes (no nodes here; torch is imported lazily).

IMAGE is [B, H, W, C] and MASK [B, H, W], both float in [0, 1]. These helpers
hold the few operations several ComfyUI nodes share, with ComfyUI's
semantics: how a batch is stretched to another size, how an alpha channel
meets an RGB image, how a source is pasted into a destination.
"""

from __future__ import annotations

from typing import Any


def repeat_to_batch(tensor: Any, batch_size: int, dim: int = 0) -> Any:
    """Cut or tile ``tensor`` along ``dim`` to ``batch_size`` items (tiling repeats the whole batch)."""
    import math

    n = tensor.shape[dim]
    if n > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if n < batch_size:
        reps = [1] * tensor.ndim
        reps[dim] = math.ceil(batch_size / n)
        return tensor.repeat(reps).narrow(dim, 0, batch_size)
    return tensor


def alpha_fix(destination: Any, source: Any) -> tuple[Any, Any]:
    """Make channel counts agree the way ComfyUI's blend/composite nodes do.

    A source with more channels than the destination loses the extra ones; a
    destination with fewer channels than the source gets one opaque channel
    appended (which only lines up when the source has exactly one more).
    """
    import torch.nn.functional as F

    if destination.shape[-1] < source.shape[-1]:
        source = source[..., :destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        destination = F.pad(destination, (0, 1))
        destination[..., -1] = 1.0
    return destination, source


def as_mask_batch(mask: Any) -> Any:
    """Any [..., H, W] mask as [N, H, W]."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


def resize_mask(mask: Any, height: int, width: int) -> Any:
    """Bilinear resize of a mask batch to (height, width), returned as [N, H, W]."""
    import torch.nn.functional as F

    flat = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
    return F.interpolate(flat, size=(height, width), mode="bilinear").squeeze(1)


def paste(destination: Any, source: Any, x: int, y: int, mask: Any = None, multiplier: int = 8,
          resize_source: bool = False) -> Any:
    """Blend ``source`` [B, C, h, w] into ``destination`` [B, C, H, W] at pixel (x, y) / ``multiplier``.

    The mask (any [..., h', w']) is resized to the source and weights it; the
    parts of the source outside the destination are dropped. ``destination``
    is written in place and returned.
    """
    import torch
    import torch.nn.functional as F

    source = source.to(destination.device)
    if resize_source:
        source = F.interpolate(source, size=(destination.shape[-2], destination.shape[-1]), mode="bilinear")
    source = repeat_to_batch(source, destination.shape[0])

    x = max(-source.shape[-1] * multiplier, min(x, destination.shape[-1] * multiplier))
    y = max(-source.shape[-2] * multiplier, min(y, destination.shape[-2] * multiplier))
    left, top = x // multiplier, y // multiplier
    right, bottom = left + source.shape[-1], top + source.shape[-2]

    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = mask.to(destination.device, copy=True)
        mask = F.interpolate(mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])),
                             size=(source.shape[-2], source.shape[-1]), mode="bilinear")
        mask = repeat_to_batch(mask, source.shape[0])

    visible_w = destination.shape[-1] - left + min(0, x)
    visible_h = destination.shape[-2] - top + min(0, y)
    mask = mask[:, :, :visible_h, :visible_w]
    if mask.ndim < source.ndim:
        mask = mask.unsqueeze(1)
    inverse = torch.ones_like(mask) - mask
    kept = inverse * destination[..., top:bottom, left:right]
    destination[..., top:bottom, left:right] = mask * source[..., :visible_h, :visible_w] + kept
    return destination


def hex_to_rgb(color: str) -> tuple[float, float, float]:
    """``#RRGGBB`` as floats in [0, 1]; anything else is black."""
    digits = color.lstrip("#")
    if len(digits) != 6:
        return (0.0, 0.0, 0.0)
    try:
        return tuple(int(digits[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    except ValueError:
        return (0.0, 0.0, 0.0)
