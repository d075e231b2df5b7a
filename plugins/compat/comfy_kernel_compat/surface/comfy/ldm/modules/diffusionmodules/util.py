"""ComfyUI's ``comfy.ldm.modules.diffusionmodules.util``: the small UNet helpers packs reuse.

``timestep_embedding`` and ``make_beta_schedule`` are core_nodes' own; the
layer factories below build plain torch layers, as ComfyUI's do.
"""

from typing import Any

from comfy_kernel_compat.reexport import reexport


def conv_nd(dims: int, *args: Any, **kwargs: Any) -> Any:
    import torch.nn as nn

    layers = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
    if dims not in layers:
        raise ValueError(f"unsupported dimensions: {dims}")
    return layers[dims](*args, **kwargs)


def avg_pool_nd(dims: int, *args: Any, **kwargs: Any) -> Any:
    import torch.nn as nn

    layers = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
    if dims not in layers:
        raise ValueError(f"unsupported dimensions: {dims}")
    return layers[dims](*args, **kwargs)


def linear(*args: Any, **kwargs: Any) -> Any:
    import torch.nn as nn

    return nn.Linear(*args, **kwargs)


def zero_module(module: Any) -> Any:
    """Zero the parameters of ``module`` and return it."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def scale_module(module: Any, scale: float) -> Any:
    for p in module.parameters():
        p.detach().mul_(scale)
    return module


def mean_flat(tensor: Any) -> Any:
    return tensor.mean(dim=list(range(1, len(tensor.shape))))


def checkpoint(func: Any, inputs: Any, params: Any, flag: bool) -> Any:
    """Gradient checkpointing is for training; inference calls ``func`` directly."""
    return func(*inputs)


def exists(val: Any) -> bool:
    return val is not None


def default(val: Any, d: Any) -> Any:
    if val is not None:
        return val
    return d() if callable(d) else d


reexport(globals(), ["model.model_sampling", "families.sd.unet"])
