"""ACE-Step 1.0's text side: the tags through umt5-base, the lyrics as token ids (ComfyUI's ``AceT5Model``).

The checkpoint keeps umt5-base under ``text_encoders.umt5base.transformer.``
and its SentencePiece model as the byte tensor ``text_encoders.spiece_model``
(ComfyUI saves the CLIP's model keys and its tokenizer's state under the
``text_encoders.`` prefix of ``ACEStep``). The tokenizer gives two lists, as
ComfyUI's ``AceT5Tokenizer`` does: ``umt5base`` (the tags' pieces, the end
token 1, no start token, no padding beyond one token) and ``lyrics`` (the
lyrics tokenizer's ids after its start token 261, padding 2, no end token);
both read ComfyUI's weight syntax, and each weighted piece is tokenized on
its own, which for lyrics also ends each piece's last line with a 2.

Encoding returns the tags' last hidden states (final layer norm, attention
mask applied, masked positions not zeroed, weights interpolated against an
empty prompt as every ComfyUI text encoder does), no pooled output, and the
lyrics' ids as ``conditioning_lyrics`` [1, n] for the DiT's lyric encoder.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ...components.clip.prompt import _piece_tokens, parse_weights
from ...components.t5 import END_TOKEN, PAD_TOKEN, T5Encoder, encode_t5, t5_config
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.quant import network_weights
from .lyrics import PAD_TOKEN as LYRICS_PAD
from .lyrics import START_TOKEN as LYRICS_START
from .lyrics import lyrics_tokens

T5_KEY = "umt5base"
LYRICS_KEY = "lyrics"
MODEL_KEY_PREFIX = "umt5base.transformer."
#: where umt5-base is kept: inside the all-in-one checkpoint, or under ComfyUI's model keys
TEXT_PREFIXES = ("text_encoders." + MODEL_KEY_PREFIX, MODEL_KEY_PREFIX)
SPIECE_KEY = "spiece_model"
T5_WIDTH = 768  # the width ComfyUI checks textual-inversion vectors against, per list
LYRICS_WIDTH = 1024

WeightedToken = tuple[Any, float]


class SentencePiece:
    """umt5's SentencePiece model from its serialized bytes: ids without start or end token, piece names."""

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece

        self.model_proto = model_proto
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto, add_bos=False, add_eos=False)

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def piece(self, token: int) -> str:
        return self._sp.id_to_piece(token)


class _LyricsPieces:
    """The lyrics tokenizer as a weighted piece sees it: its ids without the start token."""

    @staticmethod
    def encode(text: str) -> list[int]:
        return lyrics_tokens(text)[1:]


def _groups(text: str, tokenizer: Any, embedding_directory: Any, width: int,
            disable_weights: bool) -> list[list[WeightedToken]]:
    if disable_weights:  # ComfyUI still turns escaped parentheses into plain ones
        pieces = [(text.replace("\\)", ")").replace("\\(", "("), 1.0)]
    else:
        pieces = parse_weights(text)
    groups: list[list[WeightedToken]] = []
    for piece, weight in pieces:
        groups.extend(_piece_tokens(piece, weight, tokenizer, embedding_directory, width))
    return groups


def _sequence(groups: list[list[WeightedToken]], start: int | None, end: int | None, pad: int,
              min_length: int | None, min_padding: int | None, word_ids: bool) -> list[list[tuple]]:
    """One list (never cut: both of ComfyUI's tokenizers here allow ~10^8 tokens) of (token, weight[, word id]);
    word ids count the weighted pieces from 1, 0 marks the start, end and padding."""
    out: list[tuple] = [(start, 1.0, 0)] if start is not None else []
    for i, group in enumerate(groups):
        out.extend((token, weight, i + 1) for token, weight in group)
    if end is not None:
        out.append((end, 1.0, 0))
    if min_padding is not None:
        out.extend([(pad, 1.0, 0)] * min_padding)
    if min_length is not None and len(out) < min_length:
        out.extend([(pad, 1.0, 0)] * (min_length - len(out)))
    return [out if word_ids else [(token, weight) for token, weight, _ in out]]


class AceV1Tokenizer:
    """ComfyUI's ``AceT5Tokenizer``: ``{"lyrics": [[...]], "umt5base": [[...]]}`` from the tags and ``lyrics=``.

    ``tokenizer_options`` may set ``umt5base_min_length`` / ``lyrics_min_length``
    (default 1) and ``*_min_padding``; ``disable_weights`` reads parentheses as text.
    """

    def __init__(self, spiece: SentencePiece | bytes, embedding_directory: Any = None) -> None:
        self.spiece = spiece if isinstance(spiece, SentencePiece) else SentencePiece(spiece)
        self.embedding_directory = embedding_directory

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, lyrics: str = "",
                              **kwargs: Any) -> dict[str, Any]:
        options = kwargs.get("tokenizer_options", {})
        plain = bool(kwargs.get("disable_weights", False))

        def sequence(key: str, source: str, tokenizer: Any, width: int, start: int | None, end: int | None,
                     pad: int) -> list[list[tuple]]:
            groups = _groups(source, tokenizer, self.embedding_directory, width, plain)
            return _sequence(groups, start, end, pad, options.get(f"{key}_min_length", 1),
                             options.get(f"{key}_min_padding"), return_word_ids)

        return {
            LYRICS_KEY: sequence(LYRICS_KEY, lyrics, _LyricsPieces(), LYRICS_WIDTH, LYRICS_START, None, LYRICS_PAD),
            T5_KEY: sequence(T5_KEY, text, self.spiece, T5_WIDTH, None, END_TOKEN, PAD_TOKEN),
        }

    def untokenize(self, token_weight_pair: list) -> list:
        return [(p, self.spiece.piece(p[0]) if isinstance(p[0], int) else "") for p in token_weight_pair]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {SPIECE_KEY: torch.frombuffer(bytearray(self.spiece.model_proto), dtype=torch.uint8)}


def encode_ace_v1(module: T5Encoder, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    """(tags' states [1, n, 768] float32 on the CPU, None, {"conditioning_lyrics": ids [1, m] int64}).

    A clip ``layer`` within the depth picks that layer's states (normed), as
    ComfyUI's ``SDClipModel`` does; one beyond it means the last layer.
    """
    cond, _, _ = encode_t5(module, tokens[T5_KEY], attention_mask=True, layer_idx=options.get("layer"))
    lyrics = torch.tensor([[int(pair[0]) for pair in tokens[LYRICS_KEY][0]]], dtype=torch.long)
    return cond, None, {"conditioning_lyrics": lyrics}


def ace_v1_text_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps ACE-Step 1.0's umt5-base (``text_encoders.umt5base.transformer.`` in the checkpoint)."""
    for prefix in TEXT_PREFIXES:
        if prefix + "encoder.block.0.layer.0.SelfAttention.q.weight" in shapes \
                and prefix + "encoder.final_layer_norm.weight" in shapes:
            return prefix
    return None


def spiece_key(prefix: str) -> str:
    """The SentencePiece tensor's key beside umt5-base at ``prefix`` (``text_encoders.spiece_model``)."""
    return prefix[: len(prefix) - len(MODEL_KEY_PREFIX)] + SPIECE_KEY


def _read_bytes(path: str, key: str) -> bytes | None:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        if key not in f.keys():
            return None
        return f.get_tensor(key).numpy().tobytes()


def ace_v1_clip(path: str, prefix: str, shapes: Shapes, embedding_directory: Any = None) -> CLIP:
    """The CLIP of the checkpoint's umt5-base at ``prefix`` with the lyrics tokenizer."""
    from ...model.loading import UnsupportedModel

    proto = _read_bytes(path, spiece_key(prefix))
    if proto is None:
        raise UnsupportedModel(f"{os.path.basename(path)}: no '{spiece_key(prefix)}' tensor beside umt5-base "
                               "(ACE-Step 1.0 checkpoints carry the tags' SentencePiece model there)")
    cfg = t5_config(shapes, prefix)

    def rename(key: str) -> str | None:
        return key if key.startswith(("shared.", "encoder.")) or key == "scaled_fp8" else None

    weights = network_weights(path, prefix, shapes, "umt5-base text encoder", "text_encoder",
                              lambda ops, compute: T5Encoder(cfg, ops), rename=rename)
    encoder = TextEncoderModel(weights, MODEL_KEY_PREFIX, encode_ace_v1, T5_KEY)
    return CLIP(tokenizer=AceV1Tokenizer(proto, embedding_directory), cond_stage_model=encoder)
