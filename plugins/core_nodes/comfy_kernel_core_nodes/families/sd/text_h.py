"""SD2.x's text encoder: OpenCLIP ViT-H/14, penultimate layer with the final LayerNorm, padding 0.

Checkpoints keep it in OpenCLIP's layout under ``cond_stage_model.model.``;
it is converted to the Hugging Face names on read (see text_xl.openclip_to_hf).
Its model keys are ComfyUI's ``clip_h.transformer.text_model.*``.
"""

from __future__ import annotations

from typing import Any

import torch

from ...components.clip.prompt import tokenize_prompt
from ...components.clip.text_model import CLIP_H, CLIPTextModel, encode_chunks
from ...model.base import WeightsSource
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.devices import storage_dtype
from ...model.files import file_identity, load_module, part_reader, part_size
from .text import EmbeddingDirectory, SD1Tokenizer, _directory
from .text_xl import hf_names, openclip_to_hf

OPENCLIP_H_PREFIXES = ("cond_stage_model.model.", "")


def openclip_h_prefix(shapes: Shapes) -> str | None:
    for prefix in OPENCLIP_H_PREFIXES:
        emb = shapes.get(prefix + "token_embedding.weight")
        if emb is not None and emb[1] == 1024 and prefix + "transformer.resblocks.23.ln_1.weight" in shapes:
            return prefix
    return None


def _tower(key: str) -> bool:
    return key.startswith(("token_embedding", "positional_embedding", "ln_final", "transformer.resblocks"))


def _build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    with torch.device("meta"):
        model = CLIPTextModel(CLIP_H)
    return load_module(model, sd, "OpenCLIP-H text encoder")


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
    return encode_chunks(module, chunks, options.get("layer", -2), pad_token=0)


def sd2_clip(path: str, shapes: Shapes, embedding_directory: EmbeddingDirectory = None) -> CLIP | None:
    prefix = openclip_h_prefix(shapes)
    if prefix is None:
        return None
    dtype = lambda: storage_dtype("text_encoder")  # noqa: E731
    tower = {k[len(prefix):] for k in shapes if k.startswith(prefix) and _tower(k[len(prefix):])}
    keys = frozenset(name for k in tower for name in hf_names(k))
    weights = WeightsSource(key=f"{file_identity(path)}#{prefix}#clip_h",
                            read=part_reader(path, prefix, dtype, rename=lambda k: k if _tower(k) else None,
                                             convert=openclip_to_hf),
                            build=_build, keys=keys, size=part_size(path, prefix, torch.float16), dtype=dtype)
    encoder = TextEncoderModel(weights, "clip_h.transformer.text_model.", encode_sd2, "sd2_clip")
    return CLIP(tokenizer=SD2Tokenizer(embedding_directory), cond_stage_model=encoder)
