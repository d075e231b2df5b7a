"""ComfyUI's ``node_helpers``: small helpers packs share with core nodes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any


def conditioning_set_values(conditioning: list, values: dict[str, Any] | None = None,
                            append: bool = False) -> list:
    """A copy of ``conditioning`` whose option dicts get ``values`` (appended to lists with ``append``)."""
    values = values or {}
    out = []
    for cond, options in conditioning:
        new = dict(options)
        for key, value in values.items():
            if append and key in new and isinstance(new[key], list):
                new[key] = new[key] + list(value)
            else:
                new[key] = value
        out.append([cond, new])
    return out


def pillow(fn: Callable[[Any], Any], arg: Any) -> Any:
    """Call a Pillow function, retrying with truncated-image loading allowed (as ComfyUI does)."""
    from PIL import ImageFile, UnidentifiedImageError

    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        return fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        return fn(arg)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def hasher() -> Callable[..., Any]:
    """The hash constructor named by ``--default-hashing-function`` (sha256 by default)."""
    from comfy.cli_args import args

    return getattr(hashlib, str(args.default_hashing_function or "sha256"), hashlib.sha256)


def string_to_torch_dtype(string: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(string)


def image_alpha_fix(destination: Any, source: Any) -> tuple[Any, Any]:
    """Match the channel counts of two NHWC image batches (add an opaque alpha or drop it)."""
    import torch

    if destination.shape[-1] < source.shape[-1]:
        source = source[..., :destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        source = torch.nn.functional.pad(source, (0, 1))
        source[..., -1] = 1.0
    return destination, source
