"""Weight patches: how LoRA, LoHa, LoKr, differences and merges change a model's weights.

A patch list for one weight is a sequence of ``(strength_patch, value,
strength_model, offset, function)`` entries (ComfyUI's format, which node packs
build themselves). Each entry first scales the current weight by
``strength_model``, then adds ``function(strength_patch * delta)``, where the
delta comes from the value:

* ``(tensor,)`` or ``("diff", (tensor,))``: the tensor itself;
* ``("set", (tensor,))``: replaces the weight;
* a :class:`WeightAdapter` (LoRA, LoHa, LoKr, with DoRA scaling when present);
* a list ``[(weight, convert), *patches]``: another model's weight with its own
  pending patches (model merging), used as a difference-free replacement;
* ``("model_as_lora", (tensor,))``: the difference between that tensor and the
  original weight.

Patches are computed in float32 and the result rounded to the storage dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)


def _cast(t: torch.Tensor, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return t.to(device=like.device, dtype=dtype or like.dtype)


def pad_tensor_to_shape(tensor: torch.Tensor, new_shape: list[int]) -> torch.Tensor:
    """Zero-pad ``tensor`` (at the end of each dimension) to ``new_shape``."""
    if any(n < o for n, o in zip(new_shape, tensor.shape, strict=True)):
        raise ValueError("the new shape must be at least as large as the tensor in every dimension")
    out = torch.zeros(new_shape, dtype=tensor.dtype, device=tensor.device)
    out[tuple(slice(0, s) for s in tensor.shape)] = tensor
    return out


def weight_decompose(dora_scale: torch.Tensor, weight: torch.Tensor, lora_diff: torch.Tensor, alpha: float,
                     strength: float, intermediate_dtype: torch.dtype, function: Callable) -> torch.Tensor:
    """DoRA: apply the low-rank delta, then rescale each output (or input) column to the learned magnitude."""
    dora_scale = _cast(dora_scale, weight, intermediate_dtype)
    lora_diff = lora_diff * alpha
    calc = weight + function(lora_diff).type(weight.dtype)
    if dora_scale.shape[0] == calc.shape[0]:
        norm = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True).reshape(
            weight.shape[0], *[1] * (weight.dim() - 1))
    else:
        norm = calc.transpose(0, 1).reshape(calc.shape[1], -1).norm(dim=1, keepdim=True).reshape(
            calc.shape[1], *[1] * (calc.dim() - 1)).transpose(0, 1)
    norm = norm + torch.finfo(weight.dtype).eps
    calc = calc * (dora_scale / norm).type(weight.dtype)
    if strength != 1.0:
        weight += strength * (calc - weight)
    else:
        weight[:] = calc
    return weight


class WeightAdapter:
    """A factored weight delta loaded from an adapter file; ``weights`` holds its tensors."""

    name = "adapter"

    def __init__(self, loaded_keys: set[str], weights: tuple) -> None:
        self.loaded_keys = loaded_keys
        self.weights = weights

    def delta(self, weight: torch.Tensor, intermediate_dtype: torch.dtype) -> tuple[torch.Tensor, float, Any]:
        """(delta reshaped like the weight, alpha scale, dora_scale or None)."""
        raise NotImplementedError

    def calculate_weight(self, weight: torch.Tensor, key: str, strength: float, strength_model: float,
                         offset: Any, function: Callable, intermediate_dtype: torch.dtype = torch.float32,
                         original_weight: Any = None) -> torch.Tensor:
        try:
            diff, alpha, dora_scale = self.delta(weight, intermediate_dtype)
            if dora_scale is not None:
                return weight_decompose(dora_scale, weight, diff, alpha, strength, intermediate_dtype, function)
            weight += function(((strength * alpha) * diff).type(weight.dtype))
        except Exception as exc:  # a broken adapter tensor must not fail the whole model
            log.error("%s patch of %s failed: %s", self.name, key, exc)
        return weight


class LoRAAdapter(WeightAdapter):
    """W += alpha/rank * up @ down (with an optional LoCon mid tensor and DoRA scale).

    ``weights`` = (up, down, alpha, mid, dora_scale, reshape).
    """

    name = "lora"

    def delta(self, weight, intermediate_dtype):
        up, down, alpha, mid, dora_scale, _reshape = self.weights
        up, down = _cast(up, weight, intermediate_dtype), _cast(down, weight, intermediate_dtype)
        scale = alpha / down.shape[0] if alpha is not None else 1.0
        if mid is not None:
            mid = _cast(mid, weight, intermediate_dtype)
            shape = [down.shape[1], down.shape[0], mid.shape[2], mid.shape[3]]
            down = torch.mm(down.transpose(0, 1).flatten(start_dim=1),
                            mid.transpose(0, 1).flatten(start_dim=1)).reshape(shape).transpose(0, 1)
        diff = torch.mm(up.flatten(start_dim=1), down.flatten(start_dim=1)).reshape(weight.shape)
        return diff, scale, dora_scale

    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=torch.float32, original_weight=None):
        reshape = self.weights[5]
        if reshape is not None:
            weight = pad_tensor_to_shape(weight, reshape)
        return super().calculate_weight(weight, key, strength, strength_model, offset, function,
                                        intermediate_dtype, original_weight)


class LoHaAdapter(WeightAdapter):
    """LoHa: the Hadamard product of two low-rank products (optionally Tucker-factored).

    ``weights`` = (w1a, w1b, alpha, w2a, w2b, t1, t2, dora_scale).
    """

    name = "loha"

    def delta(self, weight, intermediate_dtype):
        w1a, w1b, alpha, w2a, w2b, t1, t2, dora_scale = self.weights
        c = lambda t: _cast(t, weight, intermediate_dtype)  # noqa: E731
        scale = alpha / w1b.shape[0] if alpha is not None else 1.0
        if t1 is not None:
            m1 = torch.einsum("i j k l, j r, i p -> p r k l", c(t1), c(w1b), c(w1a))
            m2 = torch.einsum("i j k l, j r, i p -> p r k l", c(t2), c(w2b), c(w2a))
        else:
            m1 = torch.mm(c(w1a), c(w1b))
            m2 = torch.mm(c(w2a), c(w2b))
        return (m1 * m2).reshape(weight.shape), scale, dora_scale


class LoKrAdapter(WeightAdapter):
    """LoKr: the Kronecker product of two (possibly low-rank) factors.

    ``weights`` = (w1, w2, alpha, w1_a, w1_b, w2_a, w2_b, t2, dora_scale).
    """

    name = "lokr"

    def delta(self, weight, intermediate_dtype):
        w1, w2, alpha, w1_a, w1_b, w2_a, w2_b, t2, dora_scale = self.weights
        c = lambda t: _cast(t, weight, intermediate_dtype)  # noqa: E731
        dim = None
        if w1 is None:
            dim = w1_b.shape[0]
            w1 = torch.mm(c(w1_a), c(w1_b))
        else:
            w1 = c(w1)
        if w2 is None:
            dim = w2_b.shape[0]
            if t2 is None:
                w2 = torch.mm(c(w2_a), c(w2_b))
            else:
                w2 = torch.einsum("i j k l, j r, i p -> p r k l", c(t2), c(w2_b), c(w2_a))
        else:
            w2 = c(w2)
        if w2.ndim == 4:
            w1 = w1.unsqueeze(2).unsqueeze(2)
        scale = alpha / dim if alpha is not None and dim is not None else 1.0
        return torch.kron(w1, w2).reshape(weight.shape), scale, dora_scale


_TUPLE_ADAPTERS = {"lora": LoRAAdapter, "loha": LoHaAdapter, "lokr": LoKrAdapter}


def calculate_weight(patches: list[tuple], weight: torch.Tensor, key: str,
                     intermediate_dtype: torch.dtype = torch.float32,
                     original_weights: dict[str, Any] | None = None) -> torch.Tensor:
    """``weight`` with every patch of the list applied in order (see the module docstring)."""
    for strength, value, strength_model, offset, function in (tuple(p) + (None,) * (5 - len(p)) for p in patches):
        function = function or (lambda a: a)
        outer = None
        if offset is not None:
            outer, weight = weight, weight.narrow(offset[0], offset[1], offset[2])
        if strength_model != 1.0:
            weight *= strength_model
        if isinstance(value, list):
            base, convert = value[0][0], value[0][1]
            merged = calculate_weight(value[1:], convert(_cast(base, weight, intermediate_dtype).clone(),
                                                          inplace=True), key, intermediate_dtype)
            value = (merged,)
        if isinstance(value, WeightAdapter):
            weight = value.calculate_weight(weight, key, strength, strength_model, offset, function,
                                            intermediate_dtype, original_weights)
        else:
            kind, data = ("diff", value) if len(value) == 1 else (value[0], value[1])
            if kind in _TUPLE_ADAPTERS:
                weight = _TUPLE_ADAPTERS[kind](set(), tuple(data)).calculate_weight(
                    weight, key, strength, strength_model, offset, function, intermediate_dtype)
            elif kind == "diff":
                diff = data[0]
                if strength == 0.0:  # only strength_model applies (the attention multiply nodes' (None,) patches)
                    pass
                elif diff.ndim > 1 and diff.shape != weight.shape:
                    log.warning("weight patch %s has shape %s, the model's is %s: skipped",
                                key, tuple(diff.shape), tuple(weight.shape))
                else:
                    weight += function(strength * _cast(diff, weight))
            elif kind == "set":
                weight.copy_(_cast(data[0], weight))
            elif kind == "model_as_lora":
                original = (original_weights or {}).get(key)
                if original is None:
                    log.warning("model_as_lora patch of %s without the original weight: skipped", key)
                else:
                    diff = _cast(data[0], weight, intermediate_dtype) - _cast(original[0][0], weight,
                                                                              intermediate_dtype)
                    weight += function(strength * _cast(diff, weight))
            else:
                log.warning("weight patch type %r of %s is not supported: skipped", kind, key)
        if outer is not None:
            weight = outer
    return weight


def patch_state_dict(sd: dict[str, torch.Tensor], patches: dict[str, list[tuple]], prefix: str,
                     wrappers: dict[str, list[Callable]] | None = None) -> None:
    """Apply model-key ``patches`` (and weight wrappers) to a freshly read state dict, in place.

    Each patched weight is computed in float32 and rounded back to its storage dtype.
    """
    originals = {key: [(sd[key[len(prefix):]],)] for key in patches if key.startswith(prefix)
                 and key[len(prefix):] in sd}
    for key, plist in patches.items():
        local = key[len(prefix):] if key.startswith(prefix) else None
        if local not in sd:
            continue
        weight = sd[local]
        work = weight.to(torch.float32, copy=True)
        work = calculate_weight(plist, work, key, torch.float32, originals)
        sd[local] = work.to(weight.dtype)
    for key, fns in (wrappers or {}).items():
        local = key[len(prefix):] if key.startswith(prefix) else None
        if local in sd:
            weight = sd[local]
            for fn in fns:
                weight = fn(weight)
            sd[local] = weight
