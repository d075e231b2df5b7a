"""Weights of the smaller networks that ride along a MODEL: ControlNets, adapters, CLIP vision, GLIGEN.

They load like every model, through the kernel's model manager (memory
budget, eviction, ``POST /free``), from a part of a weights file:
:func:`file_weights` describes the part and :class:`AuxiliaryModel` is what a
:class:`~.patcher.ModelPatcher` wraps. ``with patcher.use() as holder:``
pins the loaded network while it runs; ``holder.loaded_module`` is it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from .base import WeightsHolder, WeightsSource
from .files import file_identity, is_safetensors, part_reader, part_size, read_state_dict


class AuxiliaryModel(WeightsHolder):
    """A network whose weights the model manager holds; model keys are the network's own."""

    def __init__(self, weights: WeightsSource, key_prefix: str = "") -> None:
        self.weights = weights
        self.key_prefix = key_prefix

    def memory_required(self, input_shape: Any = None) -> int:
        return 0


def read_nested(path: str, inner: str | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a file; ``inner`` names a nested dict some ``.pth`` files keep their tensors in."""
    if inner is not None and not is_safetensors(path):
        data = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(data, dict) and isinstance(data.get(inner), dict):
            return {k: v for k, v in data[inner].items() if isinstance(v, torch.Tensor)}
    return read_state_dict(path)


def file_weights(path: str, prefix: str, kind: str, build: Callable[[dict[str, torch.Tensor]], torch.nn.Module],
                 dtype: Callable[[], torch.dtype | None], keys: frozenset[str],
                 rename: Callable[[str], str | None] | None = None,
                 convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
                 inner: str | None = None, tag: str = "") -> WeightsSource:
    """The network built from the tensors under ``prefix`` of ``path`` (renamed/converted as given).

    ``kind`` and ``tag`` make the model manager key: one file can hold several
    networks, and one network can be read in several ways (a diff ControlNet
    depends on the MODEL it is added to).
    """
    if inner is not None and not is_safetensors(path):
        def read(device: str) -> dict[str, torch.Tensor]:
            target = dtype()
            sd = {}
            for key, tensor in read_nested(path, inner).items():
                if key.startswith(prefix):
                    new = rename(key[len(prefix):]) if rename is not None else key[len(prefix):]
                    if new is not None:
                        if target is not None and tensor.is_floating_point():
                            tensor = tensor.to(target)
                        sd[new] = tensor.to(device)
            return convert(sd) if convert is not None else sd
    else:
        read = part_reader(path, prefix, dtype, rename, convert)
    size = part_size(path, prefix, dtype() or torch.float32)
    return WeightsSource(key=f"{file_identity(path)}#{prefix}#{kind}{tag}", read=read, build=build, keys=keys,
                         size=size, dtype=lambda: dtype() or torch.float32)


def module_weights(module: torch.nn.Module, kind: str) -> WeightsSource:
    """An in-memory network as a weights source (networks node packs build themselves)."""
    sd = {k: v for k, v in module.state_dict().items()}
    return WeightsSource(key=f"{kind}:obj{id(module)}", read=lambda device: {k: v.to(device) for k, v in sd.items()},
                         build=lambda loaded: module.to(next(iter(loaded.values())).device) if loaded else module,
                         keys=frozenset(sd), size=sum(v.numel() * v.element_size() for v in sd.values()))


def base_name(path: str) -> str:
    return os.path.basename(path)
