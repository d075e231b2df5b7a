"""LTX-Video 0.9's text encoder: T5-XXL (``components/t5.py``) as CLIPLoader type ``ltxv`` loads it.

A prompt is its T5 tokens and the end token, padded with 0 to 128 tokens at
least (ComfyUI's ``LTXVT5Tokenizer``); T5 attends over the prompt only and
all its final states are the conditioning [1, n, 4096], with the token mask as
``attention_mask`` for the transformer's cross-attention (the padding's states
are kept, as ComfyUI keeps them). Weighted words interpolate against the
empty prompt, as for every T5 encoder here.

The type ``ltxv`` is shared with LTX-2, whose loader (Gemma 3) is registered
first: a single T5 file loads here, anything else goes on to LTX-2's loader.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ...components import t5
from ...model.clip import CLIP
from ...model.detection import Shapes

MIN_LENGTH = 128


def encode_ltxv(module: Any, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    """T5's final states and the token mask (1 up to the end token)."""
    device = options.get("execution_device")
    cond, _, extra = t5.encode_t5(module.t5xxl.transformer, tokens["t5xxl"], attention_mask=True,
                                  device=torch.device(device) if isinstance(device, str) else device)
    return cond, None, extra


def ltxv_t5_clip(path: str, shapes: Shapes, prefix: str, embedding_directory: Any = None) -> CLIP:
    from ...model.clip import TextEncoderModel
    from ..flux.text import FluxTokenizer, text_encoder_weights

    tokenizer = FluxTokenizer(embedding_directory, clip_l=False, t5_min_length=MIN_LENGTH)
    encoder = TextEncoderModel(text_encoder_weights(None, (path, shapes, prefix)), "", encode_ltxv, "ltxv_t5")
    return CLIP(tokenizer=tokenizer, cond_stage_model=encoder)


def ltxv_clip_loader(previous: Any) -> Any:
    """CLIP type ``ltxv``: one T5-XXL file here, else ``previous`` (LTX-2's Gemma 3 loader) when there is one."""

    def load(paths: list[str], embedding_directory: Any = None) -> CLIP:
        from ...model.files import tensor_shapes
        from ...model.loading import UnsupportedModel

        if len(paths) == 1:
            shapes = tensor_shapes(paths[0])
            prefix = t5.t5_prefix(shapes)
            if prefix is not None:
                return ltxv_t5_clip(paths[0], shapes, prefix, embedding_directory)
        if previous is not None:
            return previous(paths, embedding_directory)
        names = ", ".join(os.path.basename(p) for p in paths)
        raise UnsupportedModel(f"CLIP type 'ltxv' takes one T5-XXL text encoder file, not {names}")

    return load
