"""SD1.x's text encoder: OpenAI CLIP ViT-L/14's text transformer with ComfyUI's prompt syntax.

Files hold it under many prefixes (inside a checkpoint, Hugging Face layout,
``clip_l.`` in multi-encoder files); its model keys are ComfyUI's
``clip_l.transformer.text_model.*`` so LoRA key maps and CLIP merging agree
with ComfyUI's.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ...components.clip.files import EmbeddingDirectory, clip_l_prefix
from ...components.clip.files import embedding_dir as _directory
from ...components.clip.prompt import tokenize_prompt
from ...components.clip.text_model import CLIPTextConfig, CLIPTextModel, encode_chunks
from ...model.base import WeightsSource
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.devices import storage_dtype
from ...model.files import file_identity, load_module, part_reader, part_size

MODEL_KEY_PREFIX = "clip_l.transformer.text_model."


class SD1Tokenizer:
    """``{"l": chunks}``: 77-token chunks of (token, weight) pairs (see components.clip.prompt)."""

    def __init__(self, embedding_directory: EmbeddingDirectory = None, tokenizer_data: dict | None = None,
                 clip_name: str = "l") -> None:
        self.embedding_directory = embedding_directory
        self.clip_name = clip_name

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, Any]:
        chunks = tokenize_prompt(text, embedding_dir=_directory(self.embedding_directory), width=768)
        if return_word_ids:
            chunks = [[(t, w, 0) for t, w in chunk] for chunk in chunks]
        return {self.clip_name: chunks}

    def untokenize(self, token_weight_pair: list) -> list:
        from ...components.clip.tokenizer import default_tokenizer

        tokenizer = default_tokenizer()
        return [(p, tokenizer.decode([p[0]]) if isinstance(p[0], int) else "<embedding>") for p in token_weight_pair]

    def state_dict(self) -> dict:
        return {}


def _rename(key: str) -> str | None:
    return None if key.endswith("position_ids") else key


def _build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    with torch.device("meta"):
        model = CLIPTextModel(CLIPTextConfig())
    return load_module(model, sd, "CLIP-L text encoder")


def clip_l_weights(path: str, prefix: str, shapes: Shapes) -> WeightsSource:
    dtype = lambda: storage_dtype("text_encoder")  # noqa: E731
    keys = frozenset(k[len(prefix):] for k in shapes if k.startswith(prefix) and not k.endswith("position_ids"))
    return WeightsSource(key=f"{file_identity(path)}#{prefix}#clip_l", read=part_reader(path, prefix, dtype, _rename),
                         build=_build, keys=keys, size=part_size(path, prefix, torch.float16), dtype=dtype)


def encode_sd1(module: CLIPTextModel, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    chunks = [[(p[0], p[1]) for p in chunk] for chunk in tokens["l"]]
    return encode_chunks(module, chunks, options.get("layer"))


def sd1_clip(path: str, prefix: str, shapes: Shapes, embedding_directory: EmbeddingDirectory = None) -> CLIP:
    encoder = TextEncoderModel(clip_l_weights(path, prefix, shapes), MODEL_KEY_PREFIX, encode_sd1, "sd1_clip")
    return CLIP(tokenizer=SD1Tokenizer(embedding_directory), cond_stage_model=encoder)


def load_sd1_clip(paths: list[str], embedding_directory: EmbeddingDirectory = None) -> CLIP:
    """CLIPLoader type ``stable_diffusion``: one CLIP-L file (SD1.x), or one OpenCLIP-H file (SD2.x)."""
    from ...model.files import tensor_shapes
    from ...model.loading import UnsupportedModel
    from .text_h import sd2_clip

    if len(paths) != 1:
        raise UnsupportedModel("CLIP type 'stable_diffusion' takes one text encoder file")
    shapes = tensor_shapes(paths[0])
    prefix = clip_l_prefix(shapes)
    if prefix is None:
        clip = sd2_clip(paths[0], shapes, embedding_directory)
        if clip is not None:
            return clip
        raise UnsupportedModel(f"{os.path.basename(paths[0])}: no CLIP-L or OpenCLIP-H text encoder recognised "
                               "in this file")
    return sd1_clip(paths[0], prefix, shapes, embedding_directory)
