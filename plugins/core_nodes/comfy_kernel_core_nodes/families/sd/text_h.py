"""SD2.x's text encoder: OpenCLIP ViT-H/14, penultimate layer with the final LayerNorm, padding 0.

Checkpoints keep it in OpenCLIP's layout under ``cond_stage_model.model.``;
it is converted to the Hugging Face names on read (see text_xl.openclip_to_hf).
Diffusers' SD2 folders keep it in the Hugging Face layout with 23 layers (the
last one, which the penultimate-layer output never reaches, is left out); the
layer choice counts from the full 24-layer tower either way.
Its model keys are ComfyUI's ``clip_h.transformer.text_model.*``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch

from ...components.clip.prompt import tokenize_prompt
from ...components.clip.text_model import CLIP_H, CLIPTextModel, encode_chunks
from ...model.base import WeightsSource
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes, count
from ...model.devices import storage_dtype
from ...model.files import file_identity, load_module, part_reader, part_size
from .text import EmbeddingDirectory, SD1Tokenizer, _directory
from .text_xl import hf_names, openclip_to_hf

OPENCLIP_H_PREFIXES = ("cond_stage_model.model.", "")
#: "" is how transformers 5 saves a CLIPTextModel (no ``text_model.`` level)
HF_H_PREFIXES = ("text_model.", "clip_h.transformer.text_model.", "cond_stage_model.transformer.text_model.", "")


def openclip_h_prefix(shapes: Shapes) -> str | None:
    for prefix in OPENCLIP_H_PREFIXES:
        emb = shapes.get(prefix + "token_embedding.weight")
        if emb is not None and emb[1] == 1024 and prefix + "transformer.resblocks.23.ln_1.weight" in shapes:
            return prefix
    return None


def hf_h_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps OpenCLIP-H in the Hugging Face layout (width 1024, 23 or 24 layers)."""
    for prefix in HF_H_PREFIXES:
        emb = shapes.get(prefix + "embeddings.token_embedding.weight")
        if emb is not None and emb[1] == 1024 and prefix + "encoder.layers.22.mlp.fc2.weight" in shapes \
                and prefix + "encoder.layers.24.mlp.fc2.weight" not in shapes:
            return prefix
    return None


def _tower(key: str) -> bool:
    return key.startswith(("token_embedding", "positional_embedding", "ln_final", "transformer.resblocks"))


def _builder(layers: int) -> Any:
    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        with torch.device("meta"):
            model = CLIPTextModel(dataclasses.replace(CLIP_H, layers=layers))
        return load_module(model, sd, "OpenCLIP-H text encoder")

    return build


class SD2Tokenizer(SD1Tokenizer):
    """``{"h": chunks}`` padded with 0 after the end token."""

    def __init__(self, embedding_directory: EmbeddingDirectory = None, tokenizer_data: dict | None = None) -> None:
        super().__init__(embedding_directory, clip_name="h")

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, Any]:
        chunks = tokenize_prompt(text, embedding_dir=_directory(self.embedding_directory), width=1024, pad_token=0)
        if return_word_ids:
            chunks = [[(t, w, 0) for t, w in chunk] for chunk in chunks]
        return {"h": chunks}


def encode_sd2(module: CLIPTextModel, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    chunks = [[(p[0], p[1]) for p in chunk] for chunk in tokens["h"]]
    layer = options.get("layer", -2)
    layers = len(module.encoder.layers)
    if layers < CLIP_H.layers and layer is not None:  # a shortened tower: count from the full one
        layer = min(CLIP_H.layers + layer if layer < 0 else layer, layers - 1)
    return encode_chunks(module, chunks, layer, pad_token=0)


def sd2_clip(path: str, shapes: Shapes, embedding_directory: EmbeddingDirectory = None) -> CLIP | None:
    """SD2's CLIP from OpenCLIP-H in either layout, or None if the file has no OpenCLIP-H."""
    dtype = lambda: storage_dtype("text_encoder")  # noqa: E731
    prefix = openclip_h_prefix(shapes)
    if prefix is not None:
        tower = {k[len(prefix):] for k in shapes if k.startswith(prefix) and _tower(k[len(prefix):])}
        keys = frozenset(name for k in tower for name in hf_names(k))
        read = part_reader(path, prefix, dtype, rename=lambda k: k if _tower(k) else None, convert=openclip_to_hf)
        layers = CLIP_H.layers
    else:
        prefix = hf_h_prefix(shapes)
        if prefix is None:
            return None
        keys = frozenset(k[len(prefix):] for k in shapes if k.startswith(prefix) and not k.endswith("position_ids"))
        read = part_reader(path, prefix, dtype, rename=lambda k: None if k.endswith("position_ids") else k)
        layers = count(shapes, re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
    weights = WeightsSource(key=f"{file_identity(path)}#{prefix}#clip_h", read=read, build=_builder(layers),
                            keys=keys, size=part_size(path, prefix, torch.float16), dtype=dtype)
    encoder = TextEncoderModel(weights, "clip_h.transformer.text_model.", encode_sd2, "sd2_clip")
    return CLIP(tokenizer=SD2Tokenizer(embedding_directory), cond_stage_model=encoder)
