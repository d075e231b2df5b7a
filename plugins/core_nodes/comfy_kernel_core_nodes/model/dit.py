"""The weights of a diffusion transformer, stored as UNETLoader and the file ask (fp8 / scaled fp8 included)."""

from __future__ import annotations

import math
from typing import Any

import torch

from . import ops, quant_layouts
from .base import WeightsSource
from .detection import Shapes
from .files import file_identity, load_module
from .weight_formats import attach_scales, dit_dtypes, has_packed, network_keys, scaled_reader


def dit_weights(path: str, prefix: str, shapes: Shapes, network: Any, name: str,
                weight_dtype: torch.dtype | None = None) -> WeightsSource:
    """The transformer under ``prefix``; ``network(ops, compute_dtype)`` builds it on the meta device.

    Storage: UNETLoader's ``weight_dtype``, else the file's fp8, else bf16 where the device
    computes it, else the device's UNet dtype; one copy of the weights, assigned not copied.
    fp8 storage runs through the casting layers (each layer's ``scale_weight`` multiplied in).
    """
    storage, compute = dit_dtypes(path, prefix, weight_dtype)

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        packed = has_packed(sd)
        operations = ops.manual_cast if packed else ops.pick_operations(storage(), compute())
        with torch.device("meta"):
            model = network(operations, compute() if operations.cast else None)
        if packed:
            quant_layouts.prepare(model, sd)
        model = load_module(model, sd, name)
        attach_scales(model, sd)
        return ops.set_compute_dtype(model, compute()) if operations.cast else model

    keys = network_keys(shapes, prefix)
    size = sum(math.prod(shapes[prefix + k]) for k in keys) * storage().itemsize
    tag = "" if weight_dtype is None else f"@{weight_dtype}"
    return WeightsSource(key=f"{file_identity(path)}#{prefix}#{name}{tag}",
                         read=scaled_reader(path, prefix, storage, compute=compute, packed=True),
                         build=build, keys=keys, size=size, dtype=storage, compute=compute)
