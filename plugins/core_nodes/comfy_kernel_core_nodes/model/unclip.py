"""The CLIP vision tower some checkpoints carry (unCLIP's ``embedder.model.visual.``), for unCLIPCheckpointLoader."""

from __future__ import annotations

from typing import Any

from .files import tensor_shapes


def checkpoint_clip_vision(path: str, model: Any) -> Any:
    """The checkpoint's CLIP_VISION (OpenCLIP layout under the model config's prefix), or None."""
    from .clip_vision import from_shapes

    prefix = getattr(model.model.model_config, "clip_vision_prefix", None)
    if prefix is None:
        return None
    shapes = tensor_shapes(path)
    if prefix + "transformer.resblocks.0.attn.in_proj_weight" in shapes:
        return from_shapes(path, shapes, prefix, openclip=True)
    return from_shapes(path, shapes, prefix)
