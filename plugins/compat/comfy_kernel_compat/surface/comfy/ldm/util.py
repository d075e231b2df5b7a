"""ComfyUI's ``comfy.ldm.util``: the small helpers packs import from it."""

from typing import Any

from comfy.ldm.modules.diffusionmodules.util import default, exists, mean_flat  # noqa: F401


def ismap(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] > 3


def isimage(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] in (1, 3)


def count_params(model: Any, verbose: bool = False) -> int:
    return sum(p.numel() for p in model.parameters())
