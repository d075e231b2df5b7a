"""The ``flux2`` CLIP type: Flux.2 dev's Mistral Small 3.1 24B and klein's Qwen3 (4B, or 8B for the 9B models).

Klein wraps the prompt in a Qwen3 chat turn with an empty thinking block,
pads it with ``<|endoftext|>`` to 512 tokens (padding masked out of the LLM's
attention) and conditions on the hidden states entering layers 9, 18 and 27,
concatenated per token (3 x the LLM's width), as ComfyUI does. Only the
layers up to the last one read are run. Model keys are ComfyUI's
(``qwen3_4b.transformer.model.layers.N...``), so LoRA key maps agree.

Flux.2 dev puts the prompt in Mistral's system/instruction format after the
start token (no padding) and stacks the hidden states entering layers 10, 20
and 30. Its tokenizer is the tekken vocabulary stored in the text encoder file
itself (a ``tekken_model`` byte tensor, as ComfyUI's repackaged files carry
it): byte-level BPE where pieces merge in the order of the merged token's rank.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from typing import Any

import torch

from ...components.llm.decoder import DecoderLM, LLMConfig, causal_mask, rotary_tables
from ...components.llm.encoder import ChatTokenizer, embed_prompt
from ...components.llm.generate import Sampling, reply
from ...components.llm.tokenizer import PAD_TOKEN
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.quant import network_weights
from ..lumina2.detect import count

TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
LAYERS = (9, 18, 27)
MISTRAL_TEMPLATE = ("[SYSTEM_PROMPT]You are an AI that reasons about image descriptions. You give structured "
                    "responses focusing on object relationships, object\nattribution and actions without "
                    "speculation.[/SYSTEM_PROMPT][INST]{}[/INST]")
MISTRAL_LAYERS = (10, 20, 30)
MISTRAL_KEY = "mistral3_24b"
MISTRAL_START = 1
#: the pre-tokenisation ComfyUI applies to tekken vocabularies (digits in runs of up to three)
TEKKEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
MIN_LENGTH = 512
QWEN3_PREFIXES = ("", "qwen3_4b.transformer.", "qwen3_8b.transformer.", "text_encoders.qwen3_4b.transformer.",
                  "text_encoders.qwen3_8b.transformer.")
MISTRAL_PREFIXES = ("", "mistral3_24b.transformer.", "text_encoders.mistral3_24b.transformer.")


def qwen3_config(shapes: Shapes, prefix: str) -> LLMConfig | None:
    """A Qwen3 decoder's configuration read from its keys (per-head q/k norms mark Qwen3), or None."""
    q_norm = shapes.get(prefix + "model.layers.0.self_attn.q_norm.weight")
    embed = shapes.get(prefix + "model.embed_tokens.weight")
    if q_norm is None or embed is None:
        return None
    head_dim = int(q_norm[0])
    layer = prefix + "model.layers.0."
    return LLMConfig(vocab_size=int(embed[0]), hidden_size=int(embed[1]),
                     intermediate_size=int(shapes[layer + "mlp.gate_proj.weight"][0]),
                     num_layers=count(shapes, re.escape(prefix) + r"model\.layers\.(\d+)\."),
                     num_heads=int(shapes[layer + "self_attn.q_proj.weight"][0]) // head_dim,
                     num_kv_heads=int(shapes[layer + "self_attn.k_proj.weight"][0]) // head_dim,
                     head_dim=head_dim, qk_norm=True)


def qwen3_prefix(shapes: Shapes) -> tuple[str, LLMConfig] | None:
    for prefix in QWEN3_PREFIXES:
        config = qwen3_config(shapes, prefix)
        if config is not None:
            return prefix, config
    return None


def mistral3_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps Mistral Small 3.x (a Llama-style decoder, no q/k norms), Flux.2 dev's text encoder."""
    for prefix in MISTRAL_PREFIXES:
        if prefix + "model.embed_tokens.weight" in shapes and prefix + "model.layers.0.mlp.gate_proj.weight" in shapes \
                and prefix + "model.layers.0.self_attn.q_norm.weight" not in shapes \
                and prefix + "model.layers.0.self_attn.q_proj.bias" not in shapes:
            return prefix
    return None


def mistral3_config(shapes: Shapes, prefix: str) -> LLMConfig:
    """Mistral Small 3's configuration: widths and depth from the keys, heads of 128, theta 1e9."""
    layer = prefix + "model.layers.0."
    embed = shapes[prefix + "model.embed_tokens.weight"]
    return LLMConfig(vocab_size=int(embed[0]), hidden_size=int(embed[1]),
                     intermediate_size=int(shapes[layer + "mlp.gate_proj.weight"][0]),
                     num_layers=count(shapes, re.escape(prefix) + r"model\.layers\.(\d+)\."),
                     num_heads=int(shapes[layer + "self_attn.q_proj.weight"][0]) // 128,
                     num_kv_heads=int(shapes[layer + "self_attn.k_proj.weight"][0]) // 128,
                     head_dim=128, rms_norm_eps=1e-5, rope_theta=1e9)


class TekkenTokenizer:
    """Mistral's tekken vocabulary: text -> ids (special tokens by name, the rest byte-level BPE by rank)."""

    def __init__(self, data: bytes) -> None:
        from tokenizers import Regex, pre_tokenizers

        spec = json.loads(data)
        config = spec["config"]
        self.offset = int(config["default_num_special_tokens"])
        limit = int(config["default_vocab_size"]) - self.offset
        self.ranks = {base64.b64decode(w["token_bytes"]): int(w["rank"]) for w in spec["vocab"]
                      if int(w["rank"]) < limit}
        self.special = {w["token_str"]: int(w["rank"]) for w in spec["special_tokens"] if "token_str" in w}
        names = sorted(self.special, key=len, reverse=True)
        self._special_split = re.compile("(" + "|".join(re.escape(n) for n in names) + ")") if names else None
        self._split = pre_tokenizers.Split(Regex(TEKKEN_SPLIT), behavior="isolated", invert=False)
        self._lock = threading.Lock()

    def _merge(self, piece: bytes) -> list[int]:
        parts = [piece[i:i + 1] for i in range(len(piece))]
        while len(parts) > 1:
            ranked = [(self.ranks.get(parts[i] + parts[i + 1]), i) for i in range(len(parts) - 1)]
            ranked = [(r, i) for r, i in ranked if r is not None]
            if not ranked:
                break
            _, i = min(ranked)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.ranks[p] + self.offset for p in parts]

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        pieces = self._special_split.split(text) if self._special_split is not None else [text]
        for part in pieces:
            if not part:
                continue
            if part in self.special:
                ids.append(self.special[part])
                continue
            with self._lock:
                words = [w for w, _ in self._split.pre_tokenize_str(part)]
            for word in words:
                ids.extend(self._merge(word.encode("utf-8")))
        return ids


class Mistral3Tokenizer:
    """Flux.2 dev's prompt: the start token, then the system/instruction template, weights off, no padding."""

    def __init__(self, tekken: TekkenTokenizer) -> None:
        self.tekken = tekken

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, llama_template: str | None = None,
                              **kwargs: Any) -> dict[str, Any]:
        from ...components.llm.encoder import split_pieces

        text = (llama_template or MISTRAL_TEMPLATE).format(text)
        ids = [MISTRAL_START]
        for piece in split_pieces(text):
            ids.extend(self.tekken.encode(piece))
        pairs: list[tuple] = [(t, 1.0, 0) if return_word_ids else (t, 1.0) for t in ids]
        return {MISTRAL_KEY: [pairs]}

    def untokenize(self, token_weight_pair: list) -> list:
        return [(p, str(p[0])) for p in token_weight_pair]

    def state_dict(self) -> dict:
        return {}


def encoder_key(config: LLMConfig) -> str:
    """ComfyUI's name for the encoder: ``qwen3_8b`` at width 4096, else ``qwen3_4b``."""
    return "qwen3_8b" if config.hidden_size == 4096 else "qwen3_4b"


class KleinTokenizer(ChatTokenizer):
    """The prompt in Klein's chat template, padded to 512 tokens; ``system_prompt`` adds a system turn."""

    qwen3 = True

    def __init__(self, key: str = "qwen3_4b") -> None:
        super().__init__(key, TEMPLATE, min_length=MIN_LENGTH, pad_token=PAD_TOKEN)

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, llama_template: str | None = None,
                              images: Any = (), system_prompt: str = "", **kwargs: Any) -> dict[str, Any]:
        if system_prompt:
            template = llama_template or self.template
            llama_template = "<|im_start|>system\n" + system_prompt.replace("{", "{{").replace("}", "}}") \
                + "<|im_end|>\n" + template
        return super().tokenize_with_weights(text, return_word_ids, llama_template, images, **kwargs)


def padding_mask(ids: list[Any]) -> torch.Tensor:
    """1 up to the first padding token, 0 from it on (ComfyUI's rule when the encoder has no end token)."""
    mask = torch.ones(1, len(ids), dtype=torch.long)
    for i, token in enumerate(ids):
        if token == PAD_TOKEN:
            mask[0, i:] = 0
            break
    return mask


def layer_inputs(module: DecoderLM, embeds: torch.Tensor, attention_mask: torch.Tensor,
                 layers: tuple[int, ...] = LAYERS) -> torch.Tensor:
    """The hidden states entering each of ``layers`` ([B, len(layers), L, D]); later layers are not run."""
    config = module.config
    x = embeds.to(module.dtype)
    b, n, _ = x.shape
    positions = torch.arange(n, device=x.device).unsqueeze(0).expand(b, n)
    rope = rotary_tables(config, positions, x.device, x.dtype)
    mask = causal_mask(attention_mask, n, x.dtype, x.device)
    wanted = set(layers)
    states = []
    for i, layer in enumerate(module.model.layers):
        if i in wanted:
            states.append(x)
        if i >= max(layers):
            break
        x = layer(x, rope, mask)
    else:
        if len(module.model.layers) in wanted:  # a pruned encoder: the state after its last layer, unnormed
            states.append(x)
    if len(states) != len(layers):
        raise ValueError(f"the text encoder has {len(module.model.layers)} layers; Flux.2 reads layers {layers}")
    return torch.stack(states, dim=1)


def encode_klein(module: DecoderLM, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    key = next(iter(tokens))
    pairs = tokens[key][0]
    mask = padding_mask([p[0] for p in pairs])
    layers = MISTRAL_LAYERS if key == MISTRAL_KEY else LAYERS
    with torch.no_grad():
        embeds, _ = embed_prompt(module, pairs)
        states = layer_inputs(module, embeds, mask.to(embeds.device), layers)
    b, k, n, d = states.shape
    cond = states.movedim(1, 2).reshape(b, n, k * d).float()
    return cond, None, {"attention_mask": mask}


def generate_klein(module: DecoderLM, tokens: dict[str, Any], max_new_tokens: int, sampling: Sampling,
                   **callbacks: Any) -> list[int]:
    """The Qwen3 encoder's reply to the templated prompt (TextGenerate)."""
    return reply(module, next(iter(tokens.values()))[0], max_new_tokens, sampling, **callbacks)


def klein_clip(path: str, prefix: str, config: LLMConfig, shapes: Shapes) -> CLIP:
    key = encoder_key(config)

    def rename(name: str) -> str | None:
        return name if name.startswith("model.") or name == "scaled_fp8" else None

    weights = network_weights(path, prefix, shapes, f"Flux.2 {key} text encoder",
                              "text_encoder", lambda ops, compute: DecoderLM(config, ops, compute), rename=rename)
    encoder = TextEncoderModel(weights, f"{key}.transformer.", encode_klein, "flux2_klein", generate_klein)
    return CLIP(tokenizer=KleinTokenizer(key), cond_stage_model=encoder)


def mistral_clip(path: str, prefix: str, shapes: Shapes) -> CLIP:
    from ...model.loading import UnsupportedModel

    if "tekken_model" not in shapes:
        raise UnsupportedModel(f"{os.path.basename(path)}: a Mistral Small 3 text encoder without its tokenizer "
                               "(the 'tekken_model' tensor ComfyUI's repackaged files carry)")
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        tekken = TekkenTokenizer(f.get_tensor("tekken_model").numpy().tobytes())
    config = mistral3_config(shapes, prefix)

    def rename(name: str) -> str | None:
        return name if name.startswith("model.") or name == "scaled_fp8" else None

    def fix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # a pruned encoder may come without the final norm, which the conditioning never reads
        if "model.norm.weight" not in sd:
            sd["model.norm.weight"] = torch.ones(config.hidden_size)
        return sd

    weights = network_weights(path, prefix, shapes, "Flux.2 Mistral Small 3 text encoder", "text_encoder",
                              lambda ops, compute: DecoderLM(config, ops, compute), rename=rename, fix=fix)
    encoder = TextEncoderModel(weights, f"{MISTRAL_KEY}.transformer.", encode_klein, "flux2_mistral")
    return CLIP(tokenizer=Mistral3Tokenizer(tekken), cond_stage_model=encoder)


def load_flux2_clip(paths: list[str], embedding_directory: Any = None) -> CLIP:
    """CLIPLoader type ``flux2``: Mistral Small 3 (Flux.2 dev) or Qwen3 4B / 8B (klein)."""
    from ...model.files import tensor_shapes
    from ...model.loading import UnsupportedModel

    if len(paths) != 1:
        raise UnsupportedModel("CLIP type 'flux2' takes one text encoder file")
    name = os.path.basename(paths[0])
    shapes = tensor_shapes(paths[0])
    found = qwen3_prefix(shapes)
    if found is not None:
        return klein_clip(paths[0], *found, shapes)
    prefix = mistral3_prefix(shapes)
    if prefix is not None:
        return mistral_clip(paths[0], prefix, shapes)
    raise UnsupportedModel(f"{name}: neither Mistral Small 3 nor Qwen3 recognised in this file (CLIP type 'flux2')")


def klein_clip_from_checkpoint(path: str, shapes: Shapes) -> CLIP | None:
    """The Qwen3 encoder inside a single-file Flux.2 checkpoint (``text_encoders.qwen3_*b.transformer.``)."""
    for prefix in QWEN3_PREFIXES:
        if prefix.startswith("text_encoders."):
            config = qwen3_config(shapes, prefix)
            if config is not None:
                return klein_clip(path, prefix, config, shapes)
    return None
