"""Latents made of several tensors of different shapes (LTX-2's video + audio), as ComfyUI carries them.

A LATENT's ``samples`` (and ``noise_mask``) may be a :class:`NestedTensor`:
a list of tensors that share a batch size. Nodes build and split it; the
sampler packs it into one ``[batch, 1, n]`` tensor (:func:`pack_latents`) so
every sampler, guidance function and inpainting mask works on it unchanged,
hands the parts' shapes to the model as the ``latent_shapes`` condition, and
unpacks the result. Elementwise arithmetic and ``to`` apply to each part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch


class NestedTensor:
    """Tensors of different shapes travelling together; ``shape``, ``dtype`` and ``device`` are the first part's."""

    is_nested = True

    def __init__(self, tensors: Iterable[torch.Tensor]) -> None:
        self.tensors = list(tensors)

    def _map(self, fn: Callable[[torch.Tensor, Any], torch.Tensor], other: Any = None) -> NestedTensor:
        if isinstance(other, NestedTensor):
            return NestedTensor(fn(t, o) for t, o in zip(self.tensors, other.tensors, strict=True))
        return NestedTensor(fn(t, other) for t in self.tensors)

    def __add__(self, other: Any) -> NestedTensor:
        return self._map(lambda t, o: t + o, other)

    def __sub__(self, other: Any) -> NestedTensor:
        return self._map(lambda t, o: t - o, other)

    def __mul__(self, other: Any) -> NestedTensor:
        return self._map(lambda t, o: t * o, other)

    def __truediv__(self, other: Any) -> NestedTensor:
        return self._map(lambda t, o: t / o, other)

    __radd__ = __add__
    __rmul__ = __mul__

    def __getitem__(self, index: Any) -> NestedTensor:
        return self._map(lambda t, _: t[index])

    def unbind(self) -> list[torch.Tensor]:
        return list(self.tensors)

    def to(self, *args: Any, **kwargs: Any) -> NestedTensor:
        return self._map(lambda t, _: t.to(*args, **kwargs))

    def cpu(self) -> NestedTensor:
        return self.to("cpu")

    def float(self) -> NestedTensor:
        return self.to(dtype=torch.float32)

    def clone(self) -> NestedTensor:
        return self._map(lambda t, _: t.clone())

    def size(self) -> torch.Size:
        return self.tensors[0].size()

    @property
    def shape(self) -> torch.Size:
        return self.tensors[0].shape

    @property
    def ndim(self) -> int:
        return max(t.ndim for t in self.tensors)

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.tensors[0].dtype

    @property
    def layout(self) -> torch.layout:
        return self.tensors[0].layout

    def __repr__(self) -> str:
        return f"NestedTensor({[tuple(t.shape) for t in self.tensors]})"


def is_nested(value: Any) -> bool:
    return isinstance(value, NestedTensor)


def pack_latents(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Size]]:
    """Parts of one batch size -> one ``[batch, 1, n]`` tensor and the parts' shapes."""
    shapes = [t.shape for t in tensors]
    return torch.cat([t.reshape(t.shape[0], 1, -1) for t in tensors], dim=-1), shapes


def unpack_latents(packed: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """The parts back from :func:`pack_latents`; the batch size is the packed tensor's (cond and uncond may be
    batched together)."""
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape[1:])
        out.append(packed[..., start: start + size].reshape(packed.shape[0], *shape[1:]))
        start += size
    return out
