"""Layers whose stored weights may differ from the computation: manual casting, fp8 and scaled fp8.

A weight is stored in one dtype and computed in another when memory matters
more than the cast: text encoders in fp16 computed in fp32 on the CPU, and
diffusion models in fp8 (``UNETLoader`` ``weight_dtype``, or files shipped as
fp8 / "scaled fp8") computed in fp16/bf16/fp32. These layers cast each weight
on the fly, at the device and dtype of the activations, and multiply in a
per-tensor ``scale_weight`` when the file has one; packed NVFP4 / int8 layers
are decoded first (model/quant_layouts.py). Nothing is converted up front.

Networks are built from an *operations* namespace (ComfyUI's ``comfy.ops``
pattern): :data:`manual_cast` for these casting layers, :data:`plain` for
``torch.nn``'s own. A family's builder picks the namespace from the storage
and compute dtypes (:func:`pick_operations`), so every family gets fp8 and
mixed precision the same way.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import quant_layouts

FP8 = tuple(getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name))


def cast_weight(module: nn.Module, name: str, like: torch.Tensor) -> torch.Tensor | None:
    """``module.<name>`` at ``like``'s device and dtype, scaled by ``scale_weight`` for the weight."""
    tensor = getattr(module, name, None)
    if tensor is None:
        return None
    if name != "weight":
        return tensor.to(device=like.device, dtype=like.dtype)
    out = quant_layouts.decode(module, like)
    if out is None:
        out = tensor.to(device=like.device, dtype=like.dtype)
    scale = getattr(module, "scale_weight", None)
    if scale is not None:
        out = out * scale.to(device=like.device, dtype=like.dtype)
    if tensor.dtype == torch.int8:
        out = quant_layouts.finish(module, out)
    for fn in getattr(module, "weight_function", ()):
        out = fn(out)
    return out


def _compute(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The activation in the layer's compute dtype (fp8 is never a compute dtype)."""
    dtype = getattr(module, "compute_dtype", None)
    if dtype is not None and x.dtype != dtype and x.is_floating_point():
        return x.to(dtype)
    return x


compute_input = _compute


class CastLinear(nn.Linear):
    decodes_packed = True  # NVFP4 / int8 weights go through cast_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _compute(self, x)
        pre = getattr(self, "pre_quant_scale", None)
        if pre is not None:  # AWQ-smoothed NVFP4 files scale the input channels
            x = x * pre.to(device=x.device, dtype=x.dtype)
        return F.linear(x, cast_weight(self, "weight", x), cast_weight(self, "bias", x))


class CastConv1d(nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _compute(self, x)
        return self._conv_forward(x, cast_weight(self, "weight", x), cast_weight(self, "bias", x))


class CastConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _compute(self, x)
        return self._conv_forward(x, cast_weight(self, "weight", x), cast_weight(self, "bias", x))


class CastConv3d(nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _compute(self, x)
        return self._conv_forward(x, cast_weight(self, "weight", x), cast_weight(self, "bias", x))


class CastConvTranspose1d(nn.ConvTranspose1d):
    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        x = _compute(self, x)
        return F.conv_transpose1d(x, cast_weight(self, "weight", x), cast_weight(self, "bias", x), self.stride,
                                  self.padding, self.output_padding, self.groups, self.dilation)


class CastConvTranspose2d(nn.ConvTranspose2d):
    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        x = _compute(self, x)
        padding = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation)
        return F.conv_transpose2d(x, cast_weight(self, "weight", x), cast_weight(self, "bias", x), self.stride,
                                  self.padding, padding, self.groups, self.dilation)


class CastGroupNorm(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _compute(self, x)
        return F.group_norm(x, self.num_groups, cast_weight(self, "weight", x), cast_weight(self, "bias", x), self.eps)


class CastLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _compute(self, x)
        return F.layer_norm(x, self.normalized_shape, cast_weight(self, "weight", x), cast_weight(self, "bias", x),
                            self.eps)


class CastRMSNorm(nn.Module):
    """RMSNorm with an optional learned scale, computed in the activation's dtype."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim, device=device, dtype=dtype)) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _compute(self, x)
        out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        weight = cast_weight(self, "weight", x)
        return out * weight if weight is not None else out


class CastEmbedding(nn.Embedding):
    """Embedding lookup returning rows in ``dtype`` (the stored table may be fp16, fp8 or packed int8)."""

    decodes_packed = True

    def forward(self, ids: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:  # type: ignore[override]
        target = dtype or getattr(self, "compute_dtype", None) or torch.float32
        weight = self.weight
        if weight.dtype in (torch.int8, torch.uint8):
            weight = cast_weight(self, "weight", torch.empty((), dtype=target, device=weight.device))
        elif weight.dtype in FP8:
            weight = weight.to(target)
        return F.embedding(ids.to(weight.device), weight).to(target)


#: torch.nn's layers: weights computed in their own dtype.
plain = SimpleNamespace(Linear=nn.Linear, Conv1d=nn.Conv1d, Conv2d=nn.Conv2d, Conv3d=nn.Conv3d,
                        ConvTranspose1d=nn.ConvTranspose1d, ConvTranspose2d=nn.ConvTranspose2d, GroupNorm=nn.GroupNorm,
                        LayerNorm=nn.LayerNorm,
                        RMSNorm=CastRMSNorm, Embedding=nn.Embedding, cast=False)

#: Layers that cast their weights to the activation's dtype on every call.
manual_cast = SimpleNamespace(Linear=CastLinear, Conv1d=CastConv1d, Conv2d=CastConv2d, Conv3d=CastConv3d,
                              ConvTranspose1d=CastConvTranspose1d, ConvTranspose2d=CastConvTranspose2d,
                              GroupNorm=CastGroupNorm, LayerNorm=CastLayerNorm,
                              RMSNorm=CastRMSNorm, Embedding=CastEmbedding, cast=True)


def pick_operations(storage: torch.dtype, compute: torch.dtype) -> SimpleNamespace:
    """:data:`plain` when weights compute in their storage dtype, else :data:`manual_cast`."""
    return plain if storage == compute and storage not in FP8 else manual_cast


def set_compute_dtype(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Make every casting layer of ``module`` compute in ``dtype`` (whatever its input arrives in)."""
    for layer in module.modules():
        if isinstance(layer, (CastLinear, CastConv1d, CastConv2d, CastConv3d, CastConvTranspose2d, CastGroupNorm,
                              CastLayerNorm, CastRMSNorm, CastEmbedding)):
            layer.compute_dtype = dtype
    return module
