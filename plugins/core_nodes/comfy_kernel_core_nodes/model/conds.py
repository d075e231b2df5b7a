"""Model inputs derived from conditioning, and how several of them share one batch.

``BaseModel.extra_conds`` turns a conditioning entry's options into named model
inputs wrapped in these classes; the sampler's ``calc_cond_batch`` then asks
them to fit a batch (``process_cond``), whether two entries can run in one
batch (``can_concat``) and how to join them (``concat``). Cross-attention
contexts of different token counts still batch together by repeating to a
common length (exact for softmax attention, up to rounding).
"""

from __future__ import annotations

import math
from typing import Any

import torch


def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    """Cut or repeat ``tensor`` along ``dim`` to exactly ``batch_size``."""
    size = tensor.shape[dim]
    if size > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if size < batch_size:
        reps = [1] * tensor.ndim
        reps[dim] = math.ceil(batch_size / size)
        return tensor.repeat(reps).narrow(dim, 0, batch_size)
    return tensor


class CONDRegular:
    """A tensor input batched by concatenation (``y``, ``c_concat``, ``guidance`` ...)."""

    def __init__(self, cond: Any) -> None:
        self.cond = cond

    def _copy_with(self, cond: Any) -> CONDRegular:
        return self.__class__(cond)

    def process_cond(self, batch_size: int, device: Any, **kwargs: Any) -> CONDRegular:
        return self._copy_with(repeat_to_batch_size(self.cond, batch_size).to(device))

    def can_concat(self, other: CONDRegular) -> bool:
        return self.cond.shape == other.cond.shape and self.cond.device == other.cond.device

    def concat(self, others: list[CONDRegular]) -> Any:
        return torch.cat([self.cond] + [o.cond for o in others])

    def size(self) -> list[int]:
        return list(self.cond.size())


class CONDNoiseShape(CONDRegular):
    """An input shaped like the latent (inpainting concat): cut to the entry's area too."""

    def process_cond(self, batch_size: int, device: Any, area: Any = None, **kwargs: Any) -> CONDRegular:
        data = self.cond
        if area is not None:
            dims = len(area) // 2
            for i in range(dims):
                data = data.narrow(i + 2, area[i + dims], area[i])
        return self._copy_with(repeat_to_batch_size(data, batch_size).to(device))


class CONDCrossAttn(CONDRegular):
    """Text context [B, tokens, width]: entries with different token counts batch by repetition."""

    def can_concat(self, other: CONDRegular) -> bool:
        s1, s2 = self.cond.shape, other.cond.shape
        if s1 != s2:
            if s1[0] != s2[0] or s1[2] != s2[2]:
                return False
            if math.lcm(s1[1], s2[1]) // min(s1[1], s2[1]) > 4:  # too much repetition to be worth it
                return False
        return self.cond.device == other.cond.device

    def concat(self, others: list[CONDRegular]) -> Any:
        conds = [self.cond] + [o.cond for o in others]
        length = self.cond.shape[1]
        for c in conds[1:]:
            length = math.lcm(length, c.shape[1])
        return torch.cat([c.repeat(1, length // c.shape[1], 1) if c.shape[1] < length else c for c in conds])


class CONDConstant(CONDRegular):
    """A non-tensor input shared by the whole batch; entries batch only when equal."""

    def process_cond(self, batch_size: int, device: Any, **kwargs: Any) -> CONDRegular:
        return self._copy_with(self.cond)

    def can_concat(self, other: CONDRegular) -> bool:
        return _same(self.cond, other.cond)

    def concat(self, others: list[CONDRegular]) -> Any:
        return self.cond

    def size(self) -> list[int]:
        return [1]


class CONDList(CONDRegular):
    """A list of tensors (reference latents ...), each fitted to the batch."""

    def process_cond(self, batch_size: int, device: Any, **kwargs: Any) -> CONDRegular:
        return self._copy_with([repeat_to_batch_size(c, batch_size).to(device) for c in self.cond])

    def can_concat(self, other: CONDRegular) -> bool:
        if len(self.cond) != len(other.cond):
            return False
        return all(a.shape == b.shape for a, b in zip(self.cond, other.cond, strict=True))

    def concat(self, others: list[CONDRegular]) -> Any:
        return [torch.cat([c] + [o.cond[i] for o in others]) for i, c in enumerate(self.cond)]

    def size(self) -> list[int]:
        out = [0]
        for c in self.cond:
            for i, n in enumerate(c.size()):
                if i >= len(out):
                    out.append(n)
                else:
                    out[i] += n if i == 0 else 0
        return out


def _same(a: Any, b: Any) -> bool:
    """Equal values, tensors compared whole (``==`` on a tensor holding several values has no truth value)."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
            and a.device == b.device and bool(torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
