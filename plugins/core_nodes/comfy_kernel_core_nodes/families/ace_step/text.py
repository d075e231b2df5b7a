"""ACE-Step 1.5's text side: Qwen3 0.6B as the text encoder, a Qwen3 "5 Hz" language model that writes audio codes.

The tokenizer makes four prompts from the tags, lyrics and metadata (ComfyUI's
``ACE15Tokenizer`` layout): the caption with its metadata as a list for the
0.6B encoder (its final normed states are the conditioning), the lyrics with
their language (only the 0.6B's token embeddings are used: the DiT's lyric
encoder does the rest), and a chat prompt with caption, lyrics and the
metadata as YAML for the language model, plus an empty-metadata negative
version for its classifier-free guidance. With ``generate_audio_codes`` the
language model then samples ``duration × 5`` audio codes (tokens past the
text vocabulary) with temperature, top-k and top-p; they reach the DiT as
``audio_codes``. Files keep ComfyUI's names (``model.layers.N...``; in a
checkpoint under ``text_encoders.qwen3_06b.transformer.`` and
``text_encoders.qwen3_2b/4b.transformer.``); sizes are read from them.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import torch

from ...components.llm.decoder import DecoderLM, LLMConfig
from ...components.llm.encoder import split_pieces
from ...components.llm.tokenizer import PAD_TOKEN, qwen_tokenizer
from ...model.base import WeightsSource
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes, count
from ...model.files import tensor_shapes
from ...model.quant import network_weights
from .detect import AUDIO_CODE_START, is_audio_lm, qwen3_prefix

AUDIO_CODE_END = AUDIO_CODE_START + 64000
END_OF_TURN = 151645  # <|im_end|>
LM_TEMPLATE = ("<|im_start|>system\n# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n"
               "<|im_end|>\n<|im_start|>user\n# Caption\n{}\n\n# Lyric\n{}\n<|im_end|>\n<|im_start|>assistant\n{}\n\n"
               "<|im_end|>\n")
LYRICS_TEMPLATE = "# Languages\n{}\n\n# Lyric\n{}<|endoftext|><|endoftext|>"
CAPTION_TEMPLATE = ("# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n# Caption\n{}\n\n"
                    "# Metas\n{}\n<|endoftext|>\n<|endoftext|>")
META_KEYS = ("bpm", "timesignature", "keyscale", "duration")


def _yaml_value(value: Any) -> str:
    """A scalar as PyYAML writes it for these values: plain, or single-quoted where it would not read back."""
    if isinstance(value, str) and (value == "" or value[0] in "'\"&*!|>%@`#[]{},?:-" or ": " in value
                                   or value.lower() in ("true", "false", "null", "yes", "no", "on", "off")):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def metas_yaml(metas: dict[str, Any]) -> str:
    """The metadata as a sorted YAML mapping (``bpm: 120`` ...), digit strings as numbers."""
    metas = dict(metas)
    if isinstance(metas.get("timesignature"), str) and metas["timesignature"].endswith("/4"):
        metas["timesignature"] = metas["timesignature"][:-2]
    values = {k: int(v) if isinstance(v, str) and v.isdigit() else v for k, v in metas.items()
              if v not in ("unspecified", None)}
    return "\n".join(f"{k}: {_yaml_value(values[k])}" for k in sorted(values))


def metas_list(metas: dict[str, Any]) -> str:
    """The 0.6B encoder's metadata lines: ``- bpm: 120`` ..., "N/A" where unknown, duration in whole seconds."""
    values = {k: metas.get(k, "N/A") for k in META_KEYS}
    if isinstance(values["timesignature"], str) and values["timesignature"].endswith("/4"):
        values["timesignature"] = values["timesignature"][:-2]
    duration = values["duration"]
    values["duration"] = "30 seconds" if duration == "N/A" else f"{math.ceil(float(duration))} seconds"
    return "\n".join(f"- {k}: {values[k]}" for k in META_KEYS)


class AceStep15Tokenizer:
    """``tokenize_with_weights(tags, lyrics=..., bpm=..., duration=..., ...)`` -> the four prompts and LM options."""

    def tokens(self, text: str) -> list[tuple[int, float]]:
        tokenizer = qwen_tokenizer()
        ids: list[int] = []
        for piece in split_pieces(text):
            ids.extend(tokenizer.encode(piece))
        return [(t, 1.0) for t in (ids or [PAD_TOKEN])]

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, Any]:
        caption = text.strip()
        lyrics = kwargs.get("lyrics", "")
        duration = kwargs.get("duration", 120)
        if isinstance(duration, str):
            duration = float(duration.split(None, 1)[0])
        duration = math.ceil(duration)
        metas = {k: kwargs[k] for k in META_KEYS if k in kwargs}
        metas["duration"] = duration
        negative = {k[: -len("_negative")]: kwargs[k] for k in
                    ("bpm_negative", "duration_negative", "keyscale_negative", "timesignature_negative")
                    if k in kwargs}
        caption_negative = kwargs.get("caption_negative", caption).strip()
        lyrics_negative = kwargs.get("lyrics_negative", lyrics)
        think = f"<think>\n{metas_yaml(metas)}\n</think>"
        think_negative = f"<think>\n{metas_yaml(negative)}\n</think>" if negative else "<think>\n\n</think>"
        language = kwargs.get("language")
        prompts = {
            "lm_prompt": LM_TEMPLATE.format(caption, lyrics.strip(), think),
            "lm_prompt_negative": LM_TEMPLATE.format(caption_negative, lyrics_negative.strip(), think_negative),
            "lyrics": LYRICS_TEMPLATE.format(language if language is not None else "", lyrics),
            "qwen3_06b": CAPTION_TEMPLATE.format(caption, metas_list(metas)),
        }
        out: dict[str, Any] = {key: [self.tokens(prompt)] for key, prompt in prompts.items()}
        if return_word_ids:
            out["qwen3_06b"] = [[(t, w, 0) for t, w in out["qwen3_06b"][0]]]
        codes = duration * 5
        out["lm_metadata"] = {
            "min_tokens": int(kwargs.get("min_tokens", codes)), "max_tokens": int(kwargs.get("max_tokens", codes)),
            "seed": kwargs.get("seed", 0), "generate_audio_codes": kwargs.get("generate_audio_codes", True),
            "cfg_scale": kwargs.get("cfg_scale", 2.0), "temperature": kwargs.get("temperature", 0.85),
            "top_p": kwargs.get("top_p", 0.9), "top_k": kwargs.get("top_k", 0),
        }
        return out

    def untokenize(self, token_weight_pair: list) -> list:
        return [(p, qwen_tokenizer().decode([p[0]])) for p in token_weight_pair]

    def state_dict(self) -> dict:
        return {}


def qwen3_config(shapes: Shapes, prefix: str) -> LLMConfig:
    """A Qwen3 decoder's layout from its tensors (128-wide heads)."""
    def dim(key: str, axis: int = 0) -> int:
        return int(shapes[prefix + key][axis])

    return LLMConfig(vocab_size=dim("model.embed_tokens.weight"), hidden_size=dim("model.norm.weight"),
                     intermediate_size=dim("model.layers.0.mlp.gate_proj.weight"),
                     num_layers=count(shapes, re.escape(prefix) + r"model\.layers\.(\d+)\."),
                     num_heads=dim("model.layers.0.self_attn.q_proj.weight") // 128,
                     num_kv_heads=dim("model.layers.0.self_attn.k_proj.weight") // 128, qk_norm=True)


class AceStep15Encoders(torch.nn.Module):
    """Both decoders under ComfyUI's model keys: ``qwen3_06b.transformer.`` and ``qwen3_2b/4b.transformer.``."""

    def __init__(self, text: DecoderLM, lm: DecoderLM | None, lm_name: str | None) -> None:
        super().__init__()
        self.lm_name = lm_name
        self.qwen3_06b = torch.nn.Module()
        self.qwen3_06b.transformer = text
        if lm is not None and lm_name is not None:
            holder = torch.nn.Module()
            holder.transformer = lm
            self.add_module(lm_name, holder)

    @property
    def text(self) -> DecoderLM:
        return self.qwen3_06b.transformer

    @property
    def lm(self) -> DecoderLM | None:
        return getattr(self, self.lm_name).transformer if self.lm_name is not None else None


def _nucleus(logits: torch.Tensor, top_p: float, lowest: float) -> torch.Tensor:
    ordered, order = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(torch.softmax(ordered, dim=-1), dim=-1)
    drop = cumulative > top_p
    drop[..., 1:] = drop[..., :-1].clone()
    drop[..., 0] = False
    return logits.masked_fill(drop.scatter(1, order, drop), lowest)


@torch.no_grad()
def sample_audio_codes(lm: DecoderLM, positive: list[int], negative: list[int], options: dict[str, Any]) -> list[int]:
    """Audio codes from the language model, guided by the negative prompt when ``cfg_scale`` is not 1.

    The shorter prompt is padded on the left (and the padding hidden); the
    end-of-turn token competes only once more than ``min_tokens`` steps have
    run; everything else outside the audio-code range is ruled out.
    """
    device = lm.model.norm.weight.device
    cfg = float(options["cfg_scale"])
    prompts = [positive, negative] if cfg != 1.0 else [positive]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD_TOKEN] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.stack([torch.arange(width, device=device) >= width - len(p) for p in prompts]).long()
    cache: list[list] = [[] for _ in lm.model.layers]
    generator = torch.Generator(device=device).manual_seed(int(options["seed"]))
    embeds = lm.embed(ids)
    table = lm.model.embed_tokens.weight
    codes: list[int] = []
    min_tokens, temperature = int(options["min_tokens"]), float(options["temperature"])
    top_k, top_p = int(options["top_k"] or 0), float(options["top_p"])
    for step in range(int(options["max_tokens"])):
        states = lm.step(embeds, mask, cache)[:, -1]
        logits = (states @ table.to(states).T).float()
        guided = logits[1:2] + cfg * (logits[0:1] - logits[1:2]) if cfg != 1.0 else logits[0:1].clone()
        lowest = torch.finfo(guided.dtype).min
        end_score = guided[:, END_OF_TURN].clone()
        guided[:, :AUDIO_CODE_START] = lowest
        guided[:, AUDIO_CODE_END:] = lowest
        if min_tokens < step:
            guided[:, END_OF_TURN] = end_score
        if top_k > 0:
            kth = torch.topk(guided, top_k).values[..., -1:]
            guided = guided.masked_fill(guided < kth, lowest)
        if top_p < 1.0:
            guided = _nucleus(guided, top_p, lowest)
        if temperature > 0:
            token = int(torch.multinomial(torch.softmax(guided / temperature, dim=-1), 1, generator=generator))
        else:
            token = int(guided.argmax(dim=-1))
        if token == END_OF_TURN:
            break
        codes.append(token - AUDIO_CODE_START)
        embeds = lm.embed(torch.tensor([[token]], device=device)).expand(ids.shape[0], 1, -1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return codes


def _ids(tokens: list) -> list[int]:
    return [int(pair[0]) for pair in tokens[0]]


def encode_ace15(module: AceStep15Encoders, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    """(caption states, None, {"conditioning_lyrics": lyric token embeddings[, "audio_codes": [codes]]})."""
    text = module.text
    device = text.model.norm.weight.device
    with torch.no_grad():
        caption = torch.tensor([_ids(tokens["qwen3_06b"])], device=device)
        cond, _ = text(text.embed(caption), attention_mask=torch.ones_like(caption))
        lyrics = text.embed(torch.tensor([_ids(tokens["lyrics"])], device=device))
    extra: dict[str, Any] = {"conditioning_lyrics": lyrics.float()}
    meta = tokens.get("lm_metadata", {})
    if meta.get("generate_audio_codes"):
        lm = module.lm
        if lm is None:
            from ...model.loading import UnsupportedModel

            raise UnsupportedModel("generate_audio_codes needs ACE-Step's 5 Hz language model (qwen_1.7b_ace15 or "
                                   "qwen_4b_ace15) loaded beside the 0.6B text encoder")
        extra["audio_codes"] = [sample_audio_codes(lm, _ids(tokens["lm_prompt"]),
                                                   _ids(tokens["lm_prompt_negative"]), meta)]
    return cond.float(), None, extra


def _source(path: str, prefix: str, shapes: Shapes, name: str) -> Any:
    config = qwen3_config(shapes, prefix)

    def rename(key: str) -> str | None:
        return key if key.startswith("model.") or key == "scaled_fp8" else None

    return network_weights(path, prefix, shapes, name, "text_encoder",
                           lambda ops, compute: DecoderLM(config, ops, compute), rename=rename)


def lm_name(config_width: int) -> str:
    """ComfyUI's name of the language model: ``qwen3_4b`` for the 4B (width 2560), else ``qwen3_2b`` (1.7B)."""
    return "qwen3_4b" if config_width == 2560 else "qwen3_2b"


def combined_source(text: Any, lm: Any, name: str | None) -> WeightsSource:
    """One source for both decoders, their keys under ComfyUI's model prefixes."""
    parts = [(text, "qwen3_06b.transformer.")] + ([(lm, f"{name}.transformer.")] if lm is not None else [])

    def read(device: str) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for source, prefix in parts:
            out.update({prefix + k: v for k, v in source.read(device).items()})
        return out

    def build(sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

        built = [source.build(part(prefix)) for source, prefix in parts]
        return AceStep15Encoders(built[0], built[1] if lm is not None else None, name)

    keys = frozenset(prefix + k for source, prefix in parts for k in source.keys)
    size = sum(source.size or 0 for source, _ in parts) or None
    return WeightsSource(key="+".join(s.key for s, _ in parts), read=read, build=build, keys=keys, size=size,
                         dtype=text.dtype, compute=text.compute)


def ace15_clip(parts: list[tuple[str, str, Shapes]]) -> CLIP:
    """The CLIP of (path, prefix, shapes) Qwen3 parts: one 0.6B text encoder, at most one language model."""
    from ...model.loading import UnsupportedModel

    text = lm = None
    name = None
    for path, prefix, shapes in parts:
        if is_audio_lm(shapes, prefix):
            if lm is not None:
                raise UnsupportedModel("CLIP type 'ace' takes one 5 Hz language model")
            named = [n for n in ("qwen3_2b", "qwen3_4b") if f"{n}.transformer." in prefix]
            name = named[0] if named else lm_name(int(shapes[prefix + "model.norm.weight"][0]))
            lm = _source(path, prefix, shapes, "ACE-Step 1.5 language model")
        elif text is None:
            text = _source(path, prefix, shapes, "ACE-Step 1.5 text encoder (Qwen3 0.6B)")
        else:
            raise UnsupportedModel(f"{os.path.basename(path)}: a second text encoder; CLIP type 'ace' takes the "
                                   "Qwen3 0.6B encoder and the 5 Hz language model")
    if text is None:
        raise UnsupportedModel("CLIP type 'ace' needs ACE-Step's Qwen3 0.6B text encoder (qwen_0.6b_ace15)")
    encoder = TextEncoderModel(combined_source(text, lm, name), "", encode_ace15, "ace15_clip")
    return CLIP(tokenizer=AceStep15Tokenizer(), cond_stage_model=encoder)


def load_ace_clip(paths: list[str], embedding_directory: Any = None) -> CLIP:
    """CLIPLoader / DualCLIPLoader type ``ace``: ACE-Step 1.5's Qwen3 0.6B encoder and its 5 Hz language model."""
    from ...model.loading import UnsupportedModel

    parts = []
    for path in paths:
        shapes = tensor_shapes(path)
        prefix = qwen3_prefix(shapes)
        if prefix is None:
            raise UnsupportedModel(f"{os.path.basename(path)}: no Qwen3 text encoder recognised in this file (CLIP "
                                   "type 'ace' loads ACE-Step 1.5's qwen_0.6b_ace15 and qwen_1.7b/4b_ace15)")
        parts.append((path, prefix, shapes))
    return ace15_clip(parts)
