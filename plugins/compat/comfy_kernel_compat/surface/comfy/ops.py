"""ComfyUI's ``comfy.ops``: core_nodes' layer sets (``manual_cast``, plain torch layers) and cast helpers.

ComfyUI spells the layer sets as classes with nested layer classes
(``comfy.ops.manual_cast.Linear``), which packs subclass; here they are classes
whose attributes are core_nodes' layer classes, so both spellings reach the
same layers.
"""

from typing import Any

import torch

from comfy_kernel_compat.reexport import reexport


def cast_to(weight: Any, dtype: Any = None, device: Any = None, non_blocking: bool = False,
            copy: bool = False) -> Any:
    if weight is None or (dtype in (None, weight.dtype) and device in (None, weight.device) and not copy):
        return weight
    return weight.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=copy)


def cast_to_input(weight: Any, input: Any, non_blocking: bool = False, copy: bool = True) -> Any:
    return cast_to(weight, input.dtype, input.device, non_blocking=non_blocking, copy=copy)


def cast_bias_weight(s: Any, input: Any = None, dtype: Any = None, device: Any = None,
                     bias_dtype: Any = None) -> tuple[Any, Any]:
    """``(weight, bias)`` of layer ``s`` in the dtype and device of ``input`` (or those given)."""
    if input is not None:
        dtype = dtype if dtype is not None else input.dtype
        device = device if device is not None else input.device
        bias_dtype = bias_dtype if bias_dtype is not None else dtype
    bias = cast_to(getattr(s, "bias", None), bias_dtype, device)
    return cast_to(s.weight, dtype, device), bias


class CastWeightBiasOp:
    comfy_cast_weights = False
    weight_function: list[Any] = []
    bias_function: list[Any] = []


reexport(globals(), ["model.ops"])



def _layer_set(name: str, namespace: Any, base: tuple[type, ...] = ()) -> type:
    layers = {k: v for k, v in vars(namespace).items() if isinstance(v, type)}

    def conv_nd(cls: type, dims: int, *args: Any, **kwargs: Any) -> Any:
        if dims not in (2, 3):
            raise ValueError(f"unsupported dimensions: {dims}")
        return (cls.Conv2d if dims == 2 else cls.Conv3d)(*args, **kwargs)

    return type(name, base, {**layers, "conv_nd": classmethod(conv_nd), "__module__": __name__,
                             "__doc__": f"ComfyUI's {name} layer set: core_nodes' layers."})


class GroupNorm(torch.nn.GroupNorm):
    """ComfyUI's ``disable_weight_init.GroupNorm``: a torch GroupNorm whose casting forward is a method of its own.

    AnimateDiff-Evolved saves, replaces and restores
    ``forward_comfy_cast_weights`` around sampling (its group-norm fix for
    motion modules built from these layer sets); core_nodes' own networks use
    torch's GroupNorm, whose ``forward`` it patches as well.
    """

    comfy_cast_weights = False

    def forward_comfy_cast_weights(self, input: Any) -> Any:
        weight, bias = cast_bias_weight(self, input)
        return torch.nn.functional.group_norm(input, self.num_groups, weight, bias, self.eps)

    def forward(self, input: Any) -> Any:
        if self.comfy_cast_weights:
            return self.forward_comfy_cast_weights(input)
        return super().forward(input)


disable_weight_init = _layer_set("disable_weight_init", globals()["plain"])
disable_weight_init.GroupNorm = GroupNorm
manual_cast = _layer_set("manual_cast", globals()["manual_cast"], (disable_weight_init,))


def pick_operations(weight_dtype: Any, compute_dtype: Any, load_device: Any = None, **kwargs: Any) -> Any:
    from comfy_kernel_core_nodes.model.ops import pick_operations as pick

    return pick(weight_dtype, compute_dtype if compute_dtype is not None else weight_dtype)
