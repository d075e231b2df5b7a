"""The ``lumina2`` CLIP type: Qwen3 4B for Z-Image, Gemma 2 2B for Lumina-Image 2.0 (gemma.py).

Z-Image wraps the prompt in a user turn of Qwen3's chat template and
conditions on the hidden state that enters the last layer (no final norm),
every token of the templated prompt included, as ComfyUI does. Model keys are
ComfyUI's (``qwen3_4b.transformer.model.layers.N...``). The same CLIP
generates text (TextGenerate) with Qwen3's chat turns and thinking switch.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any

import torch

from ...components.llm.decoder import QWEN3_4B, DecoderLM
from ...components.llm.encoder import ChatTokenizer, embed_prompt
from ...components.llm.generate import Sampling, reply
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.quant import network_weights
from .detect import count, gemma2_2b_prefix, qwen3_4b_prefix
from .gemma import gemma_clip

TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
KEY = "qwen3_4b"
MODEL_KEY_PREFIX = "qwen3_4b.transformer."


class ZImageTokenizer(ChatTokenizer):
    qwen3 = True

    def __init__(self, embedding_directory: Any = None, tokenizer_data: dict | None = None) -> None:
        super().__init__(KEY, TEMPLATE)


def encode_z_image(module: DecoderLM, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    pairs = tokens[KEY][0]
    with torch.no_grad():
        embeds, _ = embed_prompt(module, pairs)
        mask = torch.ones(1, embeds.shape[1], dtype=torch.long, device=embeds.device)
        _, hidden = module(embeds, attention_mask=mask, hidden_layer=-2)
    return hidden.float(), None, {"attention_mask": mask.cpu()}


def generate_qwen3(module: DecoderLM, tokens: dict[str, Any], max_new_tokens: int, sampling: Sampling,
                   **callbacks: Any) -> list[int]:
    """Qwen3's reply to the templated prompt: ids up to and including <|im_end|> (or <|endoftext|>)."""
    return reply(module, tokens[KEY][0], max_new_tokens, sampling, **callbacks)


def z_image_clip(path: str, prefix: str, shapes: Shapes) -> CLIP:
    config = replace(QWEN3_4B, num_layers=count(shapes, re.escape(prefix) + r"model\.layers\.(\d+)\."))

    def rename(key: str) -> str | None:
        return key if key.startswith("model.") or key == "scaled_fp8" else None

    weights = network_weights(path, prefix, shapes, "Qwen3 4B text encoder", "text_encoder",
                              lambda ops, compute: DecoderLM(config, ops, compute), rename=rename)
    encoder = TextEncoderModel(weights, MODEL_KEY_PREFIX, encode_z_image, "z_image_clip", generate_qwen3)
    return CLIP(tokenizer=ZImageTokenizer(), cond_stage_model=encoder)


def load_lumina2_clip(paths: list[str], embedding_directory: Any = None) -> CLIP:
    """CLIPLoader type ``lumina2``: Qwen3 4B (Z-Image) or Gemma 2 2B (Lumina-Image 2.0), told apart by their keys."""
    from ...model.files import tensor_shapes
    from ...model.loading import UnsupportedModel

    if len(paths) != 1:
        raise UnsupportedModel("CLIP type 'lumina2' takes one text encoder file")
    name = os.path.basename(paths[0])
    shapes = tensor_shapes(paths[0])
    prefix = qwen3_4b_prefix(shapes)
    if prefix is not None:
        return z_image_clip(paths[0], prefix, shapes)
    prefix = gemma2_2b_prefix(shapes)
    if prefix is not None:
        return gemma_clip(paths[0], prefix, shapes, embedding_directory)
    raise UnsupportedModel(f"{name}: no Qwen3 4B or Gemma 2 2B text encoder recognised in this file "
                           "(CLIP type 'lumina2')")
