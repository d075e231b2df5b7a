"""Lumina-Image 2.0's text encoder: Gemma 2 2B under the ``lumina2`` CLIP type, as ComfyUI runs it.

The tokenizer is Gemma's SentencePiece model. Its terms (Gemma's) keep it
out of this package; ComfyUI's Gemma files carry it as a byte tensor named
``spiece_model`` (checkpoints: ``text_encoders.spiece_model``) and it is
read from there, or from a SentencePiece file placed beside the text encoder
(``<file name>.model`` or ``tokenizer.model``).
A prompt is the start token (2) and its pieces (ComfyUI's weight syntax and
``embedding:`` names apply, no end token, no padding); the conditioning is
the hidden state that enters the last layer (no final norm) with the prompt's
attention mask. Lumina 2's system prompt is prepended by
CLIPTextEncodeLumina2, not here, as in ComfyUI.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any

import torch

from ...components.clip.prompt import _piece_tokens, parse_weights
from ...components.llm.decoder import GEMMA2_2B, DecoderLM
from ...components.llm.encoder import embed_prompt
from ...components.llm.tokenizer import SPIECE_KEY, spiece_model
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.quant import network_weights
from .detect import count

KEY = "gemma2_2b"
MODEL_KEY_PREFIX = "gemma2_2b.transformer."
START, PAD = 2, 0


class GemmaTokenizer:
    """``{"gemma2_2b": [[(token, weight), ...]]}``: the start token, then the prompt's SentencePiece ids."""

    def __init__(self, model_proto: bytes, embedding_directory: Any = None) -> None:
        import sentencepiece

        self._sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto, add_bos=False, add_eos=False)
        self.embedding_directory = embedding_directory

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, Any]:
        pieces = [(text, 1.0)] if kwargs.get("disable_weights") else parse_weights(text)
        chunk: list[tuple[Any, float]] = [(START, 1.0)]
        for piece, weight in pieces:
            for group in _piece_tokens(piece, weight, self, self.embedding_directory,  # type: ignore[arg-type]
                                       GEMMA2_2B.hidden_size):
                chunk.extend(group)
        min_length = kwargs.get("tokenizer_options", {}).get(f"{KEY}_min_length", 1)
        chunk += [(PAD, 1.0)] * max(0, (min_length or 0) - len(chunk))
        if return_word_ids:
            chunk = [(t, w, 0) for t, w in chunk]  # type: ignore[misc]
        return {KEY: [chunk]}

    def untokenize(self, token_weight_pair: list) -> list:
        return [(p, self.decode([p[0]]) if isinstance(p[0], int) else "") for p in token_weight_pair]

    def state_dict(self) -> dict:
        return {}


def token_mask(tokens: list[Any]) -> list[int]:
    """ComfyUI's mask without an end token: 1 up to the first padding token, 0 from there on."""
    mask, ended = [], False
    for token in tokens:
        ended = ended or (isinstance(token, int) and token == PAD)
        mask.append(0 if ended else 1)
    return mask


def _hidden(module: DecoderLM, pairs: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
    embeds, _ = embed_prompt(module, pairs)
    mask = torch.tensor([token_mask([p[0] for p in pairs])], dtype=torch.long, device=embeds.device)
    _, hidden = module(embeds, attention_mask=mask, hidden_layer=-2)
    return hidden[0].float(), mask


def encode_gemma(module: DecoderLM, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    """The input of the last layer; weighted tokens move from an empty prompt's states (start, padding)."""
    pairs = [(p[0], p[1]) for p in tokens[KEY][0]]
    with torch.no_grad():
        cond, mask = _hidden(module, pairs)
        if any(w != 1.0 for _, w in pairs):
            empty, _ = _hidden(module, [(START, 1.0)] + [(PAD, 1.0)] * (len(pairs) - 1))
            weights = torch.tensor([w for _, w in pairs], device=cond.device)[:, None]
            cond = (cond - empty) * weights + empty
    return cond[None].cpu(), None, {"attention_mask": mask.cpu()}


def read_tokenizer(path: str, prefix: str) -> bytes | None:
    """The SentencePiece model in the file (under the checkpoint's prefix too) or placed beside it, else None."""
    return spiece_model(path, in_checkpoint=prefix.startswith("text_encoders."))


def gemma_config(shapes: Shapes, prefix: str):
    """Gemma 2 2B with the depth, vocabulary and widths the file has (heads of 256)."""
    p = prefix + "model."
    head_dim = GEMMA2_2B.head_dim
    return replace(GEMMA2_2B, num_layers=count(shapes, re.escape(p) + r"layers\.(\d+)\."),
                   vocab_size=int(shapes[p + "embed_tokens.weight"][0]),
                   hidden_size=int(shapes[p + "embed_tokens.weight"][1]),
                   intermediate_size=int(shapes[p + "layers.0.mlp.gate_proj.weight"][0]),
                   num_heads=int(shapes[p + "layers.0.self_attn.q_proj.weight"][0]) // head_dim,
                   num_kv_heads=int(shapes[p + "layers.0.self_attn.k_proj.weight"][0]) // head_dim)


def gemma_clip(path: str, prefix: str, shapes: Shapes, embedding_directory: Any = None) -> CLIP:
    from ...model.loading import UnsupportedModel

    model_proto = read_tokenizer(path, prefix)
    if model_proto is None:
        name = os.path.basename(path)
        raise UnsupportedModel(
            f"{name}: Gemma 2 2B without its tokenizer: the file has no '{SPIECE_KEY}' tensor (ComfyUI's "
            f"repackaged Gemma files carry it) and no SentencePiece model is placed beside it as "
            f"'{os.path.splitext(name)[0]}.model' or 'tokenizer.model' (Gemma's tokenizer.model, "
            "which is not shipped here)")
    config = gemma_config(shapes, prefix)

    def rename(key: str) -> str | None:
        return key if key.startswith("model.") or key == "scaled_fp8" else None

    weights = network_weights(path, prefix, shapes, "Gemma 2 2B text encoder", "text_encoder",
                              lambda ops, compute: DecoderLM(config, ops, compute), rename=rename)
    encoder = TextEncoderModel(weights, MODEL_KEY_PREFIX, encode_gemma, "gemma2_2b")
    return CLIP(tokenizer=GemmaTokenizer(model_proto, embedding_directory), cond_stage_model=encoder)
