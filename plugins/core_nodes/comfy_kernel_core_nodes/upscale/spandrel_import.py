"""Import spandrel where torchvision is missing or does not import.

spandrel declares a torchvision dependency, but torchvision is pinned to one
torch build, so installing it beside another torch either replaces that
torch or fails to import. spandrel's package import pulls in every
architecture, and two of them import torchvision at module level: LaMa
(``rotate`` and ``InterpolationMode``, used by an inpainting model that
ImageUpscaleWithModel cannot run anyway) and RestoreFormer (``normalize``, a
one-line per-channel affine). None of the upscaling architectures (ESRGAN,
Real-ESRGAN, SwinIR, HAT, DAT, Compact, SPAN, ...) touch it.

So when a real torchvision cannot be imported, spandrel is imported with a
small stand-in under the ``torchvision`` names for the duration of that one
import, and the stand-in is removed again afterwards: only spandrel's two
modules keep references to it, and any later ``import torchvision`` elsewhere
fails (or succeeds) exactly as it would have. ``normalize`` is implemented;
``rotate`` raises a clear error.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

INSTALL_HINT = "pip install --no-deps 'spandrel>=0.4' einops typing_extensions"
_lock = threading.Lock()


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def normalize(tensor: Any, mean: Any, std: Any, inplace: bool = False) -> Any:
    """``(tensor - mean) / std`` per channel of a ``[..., C, H, W]`` tensor."""
    import torch

    mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    if inplace:
        return tensor.sub_(mean).div_(std)
    return (tensor - mean) / std


def rotate(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("This model needs torchvision (image rotation), which is not installed; "
                       "upscale models do not use it.")


def _stand_in() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.normalize = normalize
    functional.rotate = rotate
    functional.InterpolationMode = InterpolationMode
    transforms.functional = functional
    transforms.InterpolationMode = InterpolationMode
    root.transforms = transforms
    return {"torchvision": root, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}


def _real_torchvision_works() -> bool:
    before = set(sys.modules)
    try:
        importlib.import_module("torchvision.transforms.functional")
        return True
    except Exception:  # missing, or built for another torch: any import error means "not usable"
        for name in set(sys.modules) - before:
            if name == "torchvision" or name.startswith("torchvision."):
                del sys.modules[name]
        return False


def import_spandrel() -> Any:
    """The spandrel module; a clear RuntimeError when it is not installed."""
    module = sys.modules.get("spandrel")
    if module is not None:
        return module
    with _lock:
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        if importlib.util.find_spec("spandrel") is None:
            raise RuntimeError(f"Upscale models need the spandrel package: {INSTALL_HINT}")
        if _real_torchvision_works():
            return importlib.import_module("spandrel")
        stand_in = _stand_in()
        saved = {name: sys.modules.get(name) for name in stand_in}
        sys.modules.update(stand_in)
        try:
            return importlib.import_module("spandrel")
        finally:
            for name, previous in saved.items():
                if previous is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = previous
