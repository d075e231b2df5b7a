"""LTX-2's text encoder: Gemma 3 12B and the checkpoint's text head (text_head.py), as ComfyUI runs them.

The tokenizer is Gemma 3's SentencePiece model, which ComfyUI's Gemma files
carry as a byte tensor ``spiece_model`` (a ``tokenizer.model`` placed beside
the file is read too). A prompt encodes as the start token (2) and its pieces,
ComfyUI's weight syntax off (``(word:1.2)`` stays text, ``embedding:`` names
apply), padded on the left to 1024 tokens with 0; ``<end_of_turn>`` (106) and
``<image_soft_token>`` (262144) are matched anywhere in the text. Only the
unpadded tokens run: with relative rotary positions and padding hidden from
them, the padding changes nothing else.

The conditioning is built from Gemma's 49 hidden states
(:class:`.text_head.TextHead`). The same CLIP writes text (TextGenerate and
TextGenerateLTX2Prompt) with Gemma 3's chat turns, stopping at
``<end_of_turn>`` or ``<eos>``. Gemma 3's vision tower is not here: an image
leaves its ``<image_soft_token>`` as the plain token.

Model keys are ComfyUI's: ``gemma3_12b.transformer.model.layers.N...`` and the
head's ``text_embedding_projection.weight`` / ``video_embeddings_connector...``.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any

import torch

from ...components.clip.prompt import _piece_tokens
from ...components.llm.decoder import GEMMA3_12B, DecoderLM, LLMConfig
from ...components.llm.encoder import embed_prompt
from ...components.llm.generate import Sampling, reply
from ...components.llm.tokenizer import SPIECE_KEY, spiece_model
from ...model.base import WeightsSource
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes, count
from .text_head import TextHead, head_key, head_layout, run_head

KEY = "gemma3_12b"
GEMMA_PREFIX = KEY + ".transformer."
START, PAD, EOS = 2, 0, 1
END_OF_TURN, IMAGE_SOFT_TOKEN = 106, 262144
SPECIAL = {"<end_of_turn>": END_OF_TURN, "<image_soft_token>": IMAGE_SOFT_TOKEN}
STOP_TOKENS = (EOS, END_OF_TURN)
MIN_LENGTH = 1024
TEMPLATE = ("<start_of_turn>system\nYou are a helpful assistant.<end_of_turn>\n<start_of_turn>user\n{}"
            "<end_of_turn>\n<start_of_turn>model\n")
TEMPLATE_IMAGE = ("<start_of_turn>system\nYou are a helpful assistant.<end_of_turn>\n<start_of_turn>user\n\n"
                  "<image_soft_token>{}<end_of_turn>\n\n<start_of_turn>model\n")
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL) + ")")
#: Gemma 3's language model inside the released multimodal files
GEMMA_PREFIXES = ("", "language_model.", GEMMA_PREFIX, "text_encoders." + GEMMA_PREFIX)


class Gemma3Tokenizer:
    """``{"gemma3_12b": [[(token, 1.0), ...]]}`` (see the module's docstring)."""

    def __init__(self, model_proto: bytes, embedding_directory: Any = None) -> None:
        import sentencepiece

        self._sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto, add_bos=False, add_eos=False)
        self.embedding_directory = embedding_directory

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for part in _SPECIAL_SPLIT.split(text):
            if part in SPECIAL:
                ids.append(SPECIAL[part])
            elif part:
                ids.extend(self._sp.encode(part))
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        ids = [int(t) for t in ids]
        if skip_special_tokens:
            ids = [t for t in ids if t not in SPECIAL.values()]
        size = self._sp.get_piece_size()
        return self._sp.decode([t for t in ids if t < size])

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, image: Any = None,
                              llama_template: str | None = None, skip_template: bool = True,
                              **kwargs: Any) -> dict[str, Any]:
        """Tokens of ``text``; like ComfyUI, the chat template is applied only when asked (TextGenerate) and
        not to text that already opens a turn."""
        if kwargs.get("images") and image is None:
            image = kwargs["images"][0]
        if not skip_template and not text.startswith("<start_of_turn>"):
            template = llama_template or (TEMPLATE_IMAGE if image is not None else TEMPLATE)
            text = template.format(text)
        return {KEY: [gemma_tokens(self, text, GEMMA3_12B.hidden_size, KEY, return_word_ids, kwargs)]}

    def untokenize(self, token_weight_pair: list) -> list:
        return [(p, self.decode([p[0]], False) if isinstance(p[0], int) else "") for p in token_weight_pair]

    def state_dict(self) -> dict:
        return {}


def gemma_tokens(tokenizer: Any, text: str, width: int, key: str, return_word_ids: bool,
                 kwargs: dict[str, Any]) -> list[tuple]:
    """The start token and ``text``'s tokens (``embedding:`` names applied), left-padded to ``min_length``
    (1024 unless the call or the CLIP's ``<key>_min_length`` option says otherwise)."""
    chunk: list[tuple[Any, float]] = [(START, 1.0)]
    for group in _piece_tokens(text, 1.0, tokenizer, tokenizer.embedding_directory, width):
        chunk.extend(group)
    options = kwargs.get("tokenizer_options", {})
    min_length = kwargs.get("min_length", options.get(f"{key}_min_length", MIN_LENGTH))
    chunk = [(PAD, 1.0)] * max(0, (min_length or 0) - len(chunk)) + chunk
    if return_word_ids:
        return [(t, w, 0) for t, w in chunk]
    return chunk


def prompt_pairs(pairs: list[tuple]) -> list[tuple]:
    """The tokens after the left padding."""
    start = 0
    while start < len(pairs) - 1 and isinstance(pairs[start][0], int) and pairs[start][0] == PAD:
        start += 1
    return [(p[0], p[1]) for p in pairs[start:]]


class LTXAVTextModule(torch.nn.Module):
    """Gemma 3 (``gemma3_12b.transformer``) and, when the checkpoint was given, the text head's parts beside it
    (``text_embedding_projection``, the connectors), named as in ComfyUI's text encoder."""

    def __init__(self, gemma: DecoderLM, head: TextHead | None) -> None:
        super().__init__()
        self.gemma3_12b = torch.nn.Module()
        self.gemma3_12b.transformer = gemma
        self.layout = head.layout if head is not None else None
        for name, part in head.named_children() if head is not None else ():
            self.add_module(name, part)

    @property
    def gemma(self) -> DecoderLM:
        return self.gemma3_12b.transformer

    def head(self, states: torch.Tensor) -> tuple[torch.Tensor, bool]:
        return run_head(self, self.layout, states)


def encode_ltxav(module: LTXAVTextModule, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    """(conditioning [1, L', C], None, extra): see :class:`.text_head.TextHead` for what C and L' are."""
    if module.layout is None:
        raise ValueError("this Gemma 3 text encoder has no LTX-2 text projection: load it with the LTX-2 "
                         "checkpoint in 'LTXV Audio Text Encoder Loader' (LTXAVTextEncoderLoader)")
    gemma = module.gemma
    with torch.no_grad():
        embeds, _ = embed_prompt(gemma, prompt_pairs(tokens[KEY][0]))
        states = gemma.all_states(embeds)
        cond, unprocessed = module.head(states.to(gemma.dtype))
    return cond.float().cpu(), None, ({"unprocessed_ltxav_embeds": True} if unprocessed else {})


def generate_gemma3(module: LTXAVTextModule, tokens: dict[str, Any], max_new_tokens: int, sampling: Sampling,
                    **callbacks: Any) -> list[int]:
    """Gemma 3's reply to the (templated) prompt: ids up to and including <end_of_turn> or <eos>."""
    return reply(module.gemma, prompt_pairs(tokens[KEY][0]), max_new_tokens, sampling, stop_tokens=STOP_TOKENS,
                 **callbacks)


def gemma3_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps a Gemma 3 language model: q/k norms and the four norms of a Gemma layer."""
    for prefix in GEMMA_PREFIXES:
        p = prefix + "model.layers.0."
        if p + "self_attn.q_norm.weight" in shapes and p + "pre_feedforward_layernorm.weight" in shapes:
            return prefix
    return None


def gemma3_config(shapes: Shapes, prefix: str) -> LLMConfig:
    """Gemma 3 12B's settings with the depth, vocabulary, widths and heads the file has."""
    p = prefix + "model."
    head_dim = int(shapes[p + "layers.0.self_attn.q_norm.weight"][0])
    return replace(GEMMA3_12B, num_layers=count(shapes, re.escape(p) + r"layers\.(\d+)\."),
                   vocab_size=int(shapes[p + "embed_tokens.weight"][0]),
                   hidden_size=int(shapes[p + "embed_tokens.weight"][1]),
                   intermediate_size=int(shapes[p + "layers.0.mlp.gate_proj.weight"][0]), head_dim=head_dim,
                   num_heads=int(shapes[p + "layers.0.self_attn.q_proj.weight"][0]) // head_dim,
                   num_kv_heads=int(shapes[p + "layers.0.self_attn.k_proj.weight"][0]) // head_dim,
                   query_pre_attn_scalar=float(head_dim))


def read_tokenizer(path: str) -> bytes | None:
    """The SentencePiece model in the file (``spiece_model``) or beside it (``<name>.model``, ``tokenizer.model``)."""
    return spiece_model(path)


def _gemma_source(path: str, prefix: str, shapes: Shapes) -> WeightsSource:
    from ...model.quant import network_weights

    config = gemma3_config(shapes, prefix)

    def rename(key: str) -> str | None:
        return key if key.startswith("model.") or key == "scaled_fp8" else None

    return network_weights(path, prefix, shapes, "Gemma 3 text encoder", "text_encoder",
                           lambda ops, compute: DecoderLM(config, ops, compute), rename=rename)


def _head_source(path: str, shapes: Shapes, layout: dict[str, Any], gemma: WeightsSource) -> WeightsSource:
    """The head's few tensors read alone from the (large) checkpoint, stored and computed as Gemma is."""
    from safetensors import safe_open

    from ...model import ops
    from ...model.files import file_identity, load_module
    from ...model.quant import DROPPED_SUFFIXES, SCALE_SUFFIXES

    names = {k: n for k in shapes if (n := head_key(k, layout)) is not None
             and not k.endswith(SCALE_SUFFIXES + DROPPED_SUFFIXES)}
    #: fp8 weights' per-tensor scales (ComfyUI's ``weight_scale``, older files' ``scale_weight``)
    scales = {k: s for k in names for s in (k + "_scale", k[:-len("weight")] + "scale_weight") if s in shapes}

    def storage() -> torch.dtype:
        stored = gemma.dtype()
        return stored if stored.itemsize > 1 else compute()

    def compute() -> torch.dtype:
        return gemma.compute() if gemma.compute is not None else gemma.dtype()

    def read(device: str) -> dict[str, torch.Tensor]:
        target = storage()
        out = {}
        with safe_open(path, framework="pt") as f:
            for key, name in names.items():
                tensor = f.get_tensor(key)
                if tensor.is_floating_point():
                    tensor = tensor.float()
                    if key in scales:
                        tensor = tensor * f.get_tensor(scales[key]).float()
                    tensor = tensor.to(target)
                out[name] = tensor.to(device)
        return out

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        operations = ops.pick_operations(storage(), compute())
        with torch.device("meta"):
            module = TextHead(operations, layout)
        module = load_module(module, sd, "LTX-2 text projection")
        return ops.set_compute_dtype(module, compute()) if operations.cast else module

    size = sum(int(torch.Size(shapes[k]).numel()) * 4 for k in names)
    return WeightsSource(key=f"{file_identity(path)}#ltxav_text_head", read=read, build=build,
                         keys=frozenset(names.values()), size=size, dtype=storage, compute=compute)


def _combined(gemma: WeightsSource, head: WeightsSource | None) -> WeightsSource:
    def read(device: str) -> dict[str, torch.Tensor]:
        out = {GEMMA_PREFIX + k: v for k, v in gemma.read(device).items()}
        if head is not None:
            out.update(head.read(device))
        return out

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

        rest = {k: v for k, v in sd.items() if not k.startswith(GEMMA_PREFIX)}
        built = head.build(rest) if head is not None else None
        return LTXAVTextModule(gemma.build(part(GEMMA_PREFIX)), built)

    keys = frozenset(GEMMA_PREFIX + k for k in gemma.keys) | (head.keys if head is not None else frozenset())
    size = (gemma.size or 0) + ((head.size or 0) if head is not None else 0) or None
    return WeightsSource(key=gemma.key + ("+" + head.key if head is not None else ""), read=read, build=build,
                         keys=keys, size=size, dtype=gemma.dtype, compute=gemma.compute)


def ltxav_clip(gemma_path: str, checkpoint_path: str | None = None, embedding_directory: Any = None) -> CLIP:
    """The CLIP of a Gemma 3 file and (for conditioning) the LTX-2 checkpoint with its text head."""
    from ...model.files import tensor_shapes
    from ...model.loading import UnsupportedModel

    name = os.path.basename(gemma_path)
    shapes = tensor_shapes(gemma_path)
    prefix = gemma3_prefix(shapes)
    if prefix is None:
        raise UnsupportedModel(f"{name}: no Gemma 3 language model recognised in this file")
    model_proto = read_tokenizer(gemma_path)
    if model_proto is None:
        raise UnsupportedModel(
            f"{name}: Gemma 3 without its tokenizer: the file has no '{SPIECE_KEY}' tensor (ComfyUI's "
            f"repackaged Gemma 3 files carry it) and no SentencePiece model is placed beside it as "
            f"'{os.path.splitext(name)[0]}.model' or 'tokenizer.model'")
    gemma = _gemma_source(gemma_path, prefix, shapes)
    head = None
    if checkpoint_path is not None:
        ckpt_shapes = tensor_shapes(checkpoint_path)
        layout = head_layout(ckpt_shapes)
        if layout is None:
            raise UnsupportedModel(f"{os.path.basename(checkpoint_path)}: no LTX-2 text projection "
                                   "(text_embedding_projection) in this checkpoint")
        head = _head_source(checkpoint_path, ckpt_shapes, layout, gemma)
    encoder = TextEncoderModel(_combined(gemma, head), "", encode_ltxav, "ltxav_te", generate_gemma3)
    return CLIP(tokenizer=Gemma3Tokenizer(model_proto, embedding_directory), cond_stage_model=encoder)


def gemma3_clip(path: str, prefix: str, shapes: Shapes) -> CLIP:
    """A Gemma 3 file alone (CLIPLoader): it writes text; conditioning needs the checkpoint's head."""
    return ltxav_clip(path)


def load_ltxv_clip(paths: list[str], embedding_directory: Any = None) -> CLIP:
    """CLIP type ``ltxv``: Gemma 3 alone, Gemma 3 and an LTX-2 checkpoint (the order does not matter), or a
    Gemma 4 file alone (LTX-2.5's text encoder with its projection, or the Gemma 4 prompt enhancer)."""
    from ...components.llm.gemma4 import is_gemma4
    from ...model.files import tensor_shapes
    from ...model.loading import UnsupportedModel
    from .text_gemma4 import gemma4_clip

    if len(paths) == 1 and is_gemma4(tensor_shapes(paths[0])):
        return gemma4_clip(paths[0], embedding_directory)
    gemma = [p for p in paths if gemma3_prefix(tensor_shapes(p)) is not None]
    rest = [p for p in paths if p not in gemma]
    if len(gemma) != 1 or len(rest) > 1:
        raise UnsupportedModel("CLIP type 'ltxv' takes a Gemma 3 text encoder file (and an LTX-2 checkpoint), "
                               "a Gemma 4 file (LTX-2.5), "
                               "or a T5-XXL file alone (LTX-Video 0.9)")
    return ltxav_clip(gemma[0], rest[0] if rest else None, embedding_directory)
