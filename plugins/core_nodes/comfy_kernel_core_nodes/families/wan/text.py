"""Wan's text encoder: umt5-xxl (T5 with a relative position table per layer), its tokenizer from the file.

ComfyUI's umt5 files carry the SentencePiece model as a byte tensor named
``spiece_model``; the tokenizer is read from there (nothing is downloaded or
shipped). A prompt is its tokens, the end token (1) and padding (0) to 512;
the encoder sees the attention mask and the states of the padding are
zeroed, so the conditioning is [1, 512, 4096] with the prompt's states first.
"""

from __future__ import annotations

import os
from typing import Any

from ...components.t5 import T5Encoder, encode_t5, t5_config, tokenize_t5
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.quant import network_weights
from .detect import umt5_prefix

KEY = "umt5xxl"
MODEL_KEY_PREFIX = "umt5xxl.transformer."
MIN_LENGTH = 512
SPIECE_KEY = "spiece_model"


class SentencePieceTokenizer:
    """``encode(text) -> ids`` with a serialized SentencePiece model, no start or end token added."""

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece

        self._sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto, add_bos=False, add_eos=False)

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)


class UMT5Tokenizer:
    """ComfyUI's ``WanT5Tokenizer``: ``{"umt5xxl": [[(token, weight), ...]]}``, padded to 512."""

    def __init__(self, tokenizer: SentencePieceTokenizer, embedding_directory: Any = None) -> None:
        self.tokenizer = tokenizer
        self.embedding_directory = embedding_directory

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, Any]:
        options = kwargs.get("tokenizer_options", {})
        min_length = options.get("umt5xxl_min_length", MIN_LENGTH)
        chunks = tokenize_t5(text, min_length, self.embedding_directory, 4096,
                             min_padding=options.get("umt5xxl_min_padding"),
                             disable_weights=kwargs.get("disable_weights", False), tokenizer=self.tokenizer)
        if return_word_ids:
            chunks = [[(t, w, 0) for t, w in chunk] for chunk in chunks]
        return {KEY: chunks}

    def untokenize(self, token_weight_pair: list) -> list:
        return [(p, self.tokenizer.decode([p[0]]) if isinstance(p[0], int) else "") for p in token_weight_pair]


def encode_umt5(module: T5Encoder, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    cond, _, extra = encode_t5(module, tokens[KEY], attention_mask=True)
    mask = extra["attention_mask"]
    return cond * mask[..., None].to(cond), None, {}


def read_spiece(path: str) -> bytes | None:
    """The SentencePiece model stored in a umt5 file, or None."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        if SPIECE_KEY not in f.keys():
            return None
        return f.get_tensor(SPIECE_KEY).numpy().tobytes()


def wan_clip(path: str, prefix: str, shapes: Shapes, embedding_directory: Any = None) -> CLIP:
    from ...model.loading import UnsupportedModel

    proto = read_spiece(path)
    if proto is None:
        raise UnsupportedModel(f"{os.path.basename(path)}: this umt5 file has no '{SPIECE_KEY}' tensor "
                               "(the tokenizer ComfyUI's umt5-xxl files carry)")
    cfg = t5_config(shapes, prefix)

    def rename(key: str) -> str | None:
        return key if key.startswith(("shared.", "encoder.")) or key == "scaled_fp8" else None

    weights = network_weights(path, prefix, shapes, "umt5 text encoder", "text_encoder",
                              lambda ops, compute: T5Encoder(cfg, ops), rename=rename)
    encoder = TextEncoderModel(weights, MODEL_KEY_PREFIX, encode_umt5, "umt5xxl")
    return CLIP(tokenizer=UMT5Tokenizer(SentencePieceTokenizer(proto), embedding_directory),
                cond_stage_model=encoder)


def load_wan_clip(paths: list[str], embedding_directory: Any = None) -> CLIP:
    """CLIPLoader type ``wan``: one umt5-xxl file (bf16, fp16, fp8 or scaled fp8)."""
    from ...model.files import tensor_shapes
    from ...model.loading import UnsupportedModel

    if len(paths) != 1:
        raise UnsupportedModel("CLIP type 'wan' takes one text encoder file (umt5-xxl)")
    shapes = tensor_shapes(paths[0])
    prefix = umt5_prefix(shapes)
    if prefix is None:
        raise UnsupportedModel(f"{os.path.basename(paths[0])}: no umt5 text encoder recognised in this file "
                               "(CLIP type 'wan' needs umt5-xxl)")
    return wan_clip(paths[0], prefix, shapes, embedding_directory)

