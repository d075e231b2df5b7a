"""LTX-2.5's text encoder: Gemma 4 with the text projection in the same file, and Gemma 4 as prompt enhancer.

LTX-2.5 ships its text encoder as one file (``gemma4-12b-with-proj-ltx-2.5*``):
Gemma 4 12B's language model under ComfyUI's flattened names (``model.layers.N``),
its image/audio embedders (``vision_model.*``, ``multi_modal_projector.*``,
``audio_projector.*``, not used for text), LTX-2.5's feature extractor
(``text_embedding_projection.video_aggregate_embed`` / ``audio_aggregate_embed``,
LTX-2.3's kind, text_head.py), the Hugging Face tokenizer as a byte tensor
``tokenizer_json`` and Gemma's config as the ``gemma_config`` metadata entry.
The text connectors stay in the diffusion model, so the conditioning is the
projection's output marked ``unprocessed_ltxav_embeds``, as for LTX-2.3.

A prompt encodes as the start token (2) and its tokens, padded on the left
to 1024 (only the unpadded ones run). The conditioning reads the 12B's
hidden states (the embeddings, each layer's output, the final normed state).

The same loader takes a Gemma 4 chat model alone (the templates' E2B file,
Hugging Face's ``model.language_model.*`` names accepted too): it writes text
for TextGenerateLTX2Prompt in Gemma 4's turns (``<|turn>role ... <turn|>``),
stopping at ``<turn|>`` or ``<eos>``. Images are not looked at (no vision
tower here): an image leaves its placeholder token as plain text.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from ...components.llm import gemma4
from ...components.llm.generate import Sampling, reply
from ...model.base import WeightsSource
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from .text import gemma_tokens, prompt_pairs
from .text_head import DualProjection, head_layout, run_head

KEY = "gemma4"
TOKENIZER_TENSOR = "tokenizer_json"
CONFIG_METADATA = "gemma_config"
EOS = 1
TURN_START, TURN_END, IMAGE_TOKEN = 105, 106, 258880
STOP_TOKENS = (EOS, TURN_END)
TURN_TEMPLATE = "<|turn>{role}\n{text}<turn|>\n"


def chat_prompt(system: str, user: str) -> str:
    """Gemma 4's turns around a system and a user message, ready for the model's answer."""
    return (TURN_TEMPLATE.format(role="system", text=system) + TURN_TEMPLATE.format(role="user", text=user)
            + "<|turn>model\n")


class Gemma4Tokenizer:
    """``{"gemma4": [[(token, 1.0), ...]]}``: Hugging Face's tokenizer from the file (``tokenizers``)."""

    chat = "gemma4"

    def __init__(self, tokenizer_json: bytes, embedding_directory: Any = None, width: int = 3840) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        self.embedding_directory = embedding_directory
        self.width = width

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(t) for t in ids], skip_special_tokens=skip_special_tokens)

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, image: Any = None,
                              llama_template: str | None = None, skip_template: bool = True,
                              **kwargs: Any) -> dict[str, Any]:
        """Tokens of ``text``; TextGenerate's plain prompts get a user turn (text already in turns is kept)."""
        if not skip_template and not text.startswith("<|turn>"):
            text = (llama_template or "<|turn>user\n{}<turn|>\n<|turn>model\n").format(text)
        return {KEY: [gemma_tokens(self, text, self.width, KEY, return_word_ids, kwargs)]}

    def untokenize(self, token_weight_pair: list) -> list:
        return [(p, self.decode([p[0]], False) if isinstance(p[0], int) else "") for p in token_weight_pair]

    def state_dict(self) -> dict:
        return {}


class Gemma4TextModule(torch.nn.Module):
    """Gemma 4 (``gemma``) and, in LTX-2.5's file, the projection beside it (``text_embedding_projection``)."""

    def __init__(self, gemma: torch.nn.Module, layout: dict[str, Any] | None, ops: Any) -> None:
        super().__init__()
        self.gemma = gemma
        self.layout = layout
        if layout is not None:
            self.text_embedding_projection = DualProjection(ops, layout["in_features"], layout["video_width"],
                                                            layout["audio_width"])


def encode(module: Gemma4TextModule, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    """(LTX-2.5's projected features [1, L, video + audio width], None, unprocessed: the connectors run later)."""
    from ...components.llm.encoder import embed_prompt

    if module.layout is None:
        raise ValueError("this Gemma 4 file has no LTX-2.5 text projection (text_embedding_projection): "
                         "conditioning needs LTX-2.5's text encoder file (gemma4-12b-with-proj-ltx-2.5)")
    gemma = module.gemma
    with torch.no_grad():
        embeds, _ = embed_prompt(gemma, prompt_pairs(tokens[KEY][0]))
        states = gemma.all_states(embeds)
        cond, unprocessed = run_head(module, module.layout, states.to(gemma.dtype))
    return cond.float().cpu(), None, ({"unprocessed_ltxav_embeds": True} if unprocessed else {})


def generate(module: Gemma4TextModule, tokens: dict[str, Any], max_new_tokens: int, sampling: Sampling,
             **callbacks: Any) -> list[int]:
    return reply(module.gemma, prompt_pairs(tokens[KEY][0]), max_new_tokens, sampling, stop_tokens=STOP_TOKENS,
                 **callbacks)


def _read_extras(path: str) -> tuple[bytes | None, dict[str, Any] | None]:
    """(the tokenizer JSON, Gemma's Hugging Face config) the file carries."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        config = (f.metadata() or {}).get(CONFIG_METADATA)
        tokenizer = None
        if TOKENIZER_TENSOR in f.keys():
            tokenizer = f.get_tensor(TOKENIZER_TENSOR).to(torch.uint8).numpy().tobytes()
    return tokenizer, (json.loads(config) if config else None)


def _weights(path: str, shapes: Shapes, config: gemma4.Gemma4Config, layout: dict[str, Any] | None,
             prefix: str) -> WeightsSource:
    from ...model.quant import network_weights

    def rename(key: str) -> str | None:
        if key.startswith("text_embedding_projection.") and layout is not None:
            return key
        name = gemma4.rename(key, prefix)
        return None if name is None else "gemma." + name

    def make(ops: Any, compute: torch.dtype | None) -> torch.nn.Module:
        return Gemma4TextModule(gemma4.Gemma4LM(config, ops, compute), layout, ops)

    return network_weights(path, "", shapes, "Gemma 4 text encoder", "text_encoder", make, rename=rename)


def gemma4_clip(path: str, embedding_directory: Any = None) -> CLIP:
    """CLIP of a Gemma 4 file: LTX-2.5's text encoder (with its projection) or a Gemma 4 chat model."""
    from ...model.files import tensor_shapes
    from ...model.loading import UnsupportedModel

    name = os.path.basename(path)
    shapes = tensor_shapes(path)
    prefix = gemma4.language_model_prefix(shapes)
    if prefix is None:
        raise UnsupportedModel(f"{name}: no Gemma 4 language model recognised in this file")
    tokenizer_json, hf_config = _read_extras(path)
    if tokenizer_json is None:
        raise UnsupportedModel(f"{name}: Gemma 4 without its tokenizer (no '{TOKENIZER_TENSOR}' tensor)")
    config = gemma4.Gemma4Config.from_hf(hf_config) if hf_config else gemma4.config_from_shapes(shapes, prefix)
    layout = head_layout(shapes)
    if layout is not None and layout["projection"] != "dual_linear":
        raise UnsupportedModel(f"{name}: a Gemma 4 file with an LTX-2 (not LTX-2.5) text projection")
    encoder = TextEncoderModel(_weights(path, shapes, config, layout, prefix), "", encode, "ltxav_te", generate)
    return CLIP(tokenizer=Gemma4Tokenizer(tokenizer_json, embedding_directory, config.hidden_size),
                cond_stage_model=encoder)
