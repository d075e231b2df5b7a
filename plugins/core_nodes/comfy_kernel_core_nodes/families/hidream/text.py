"""HiDream's text encoders: CLIP-L, CLIP-G, T5-XXL and Llama 3.1 8B, any of them optional.

What the transformer reads, as ComfyUI builds it: the pooled vector is
CLIP-L's projected pooled output beside CLIP-G's (2048; a missing CLIP gives
zeros); the context is T5's 128 states (the prompt's first 128 tokens,
padding masked); ``conditioning_llama3`` is every Llama layer's output for
the prompt (``<|begin_of_text|>`` first, padded to 128 with ``<|eot_id|>``,
padding masked), the final one normed, stacked as [1, 32, tokens, 4096]
(the embeddings are not among them). CLIP files with 248 positions
(Long-CLIP, as HiDream's ship) tokenize in chunks of 248. Model keys are
ComfyUI's (``clip_l.transformer.text_model.*``, ``t5xxl.transformer.*``,
``llama.transformer.model.*``).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ...components import t5
from ...components.clip.files import (
    EmbeddingDirectory,
    clip_l_prefix,
    g_reader,
    hf_g_prefix,
    openclip_g_prefix,
)
from ...components.clip.files import embedding_dir as _directory
from ...components.clip.prompt import parse_weights, tokenize_prompt
from ...components.clip.text_model import CLIP_G, CLIPTextConfig, CLIPTextModel, encode_chunks
from ...components.llm.decoder import LLAMA31_8B, DecoderLM, LLMConfig
from ...components.llm.llama3_tokenizer import BEGIN_OF_TEXT, EOT, llama3_tokenizer
from ...model.base import WeightsSource
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.devices import storage_dtype
from ...model.files import combined_reader, file_identity, load_module, part_reader, tensor_shapes
from ...model.weight_formats import network_keys, scaled_reader
from .detect import count, llama3_prefix

T5_LENGTH = 128
LLAMA_MIN_LENGTH = 128
MODEL_PREFIX = {"clip_l": "clip_l.transformer.text_model.", "clip_g": "clip_g.transformer.text_model.",
                "t5xxl": "t5xxl.transformer.", "llama": "llama.transformer."}
NAMES = ("clip_l", "clip_g", "t5xxl", "llama")

File = tuple[str, Shapes, str]


class HiDreamTextEncoders(nn.Module):
    """Whichever encoders were loaded, each under ``<name>.transformer`` as in ComfyUI."""

    def __init__(self, configs: dict[str, Any]) -> None:
        super().__init__()
        for name, config in configs.items():
            holder = nn.Module()
            if name == "t5xxl":
                holder.transformer = t5.T5Encoder(config)
            elif name == "llama":
                holder.transformer = DecoderLM(config)
            else:
                holder.transformer = nn.Module()
                holder.transformer.text_model = CLIPTextModel(config)
            self.add_module(name, holder)

    def part(self, name: str) -> Any:
        holder = getattr(self, name, None)
        if holder is None:
            return None
        return holder.transformer.text_model if name.startswith("clip") else holder.transformer


def _no_position_ids(key: str) -> str | None:
    return None if key.endswith("position_ids") else key


def _positions(shapes: Shapes, prefix: str, default: int = 77) -> int:
    for key in (prefix + "embeddings.position_embedding.weight", prefix + "positional_embedding"):
        if key in shapes:
            return int(shapes[key][0])
    return default


def llama_config(shapes: Shapes, prefix: str) -> LLMConfig:
    """Llama 3.1 8B's configuration, with the depth and widths the file has (heads of 128)."""
    head_dim = LLAMA31_8B.head_dim
    return replace(LLAMA31_8B, hidden_size=int(shapes[prefix + "model.norm.weight"][0]),
                   num_layers=count(shapes, re.escape(prefix) + r"model\.layers\.(\d+)\."),
                   intermediate_size=int(shapes[prefix + "model.layers.0.mlp.gate_proj.weight"][0]),
                   num_heads=int(shapes[prefix + "model.layers.0.self_attn.q_proj.weight"][0]) // head_dim,
                   num_kv_heads=int(shapes[prefix + "model.layers.0.self_attn.k_proj.weight"][0]) // head_dim)


def projection_key(shapes: Shapes, prefix: str) -> str | None:
    """Where a CLIP-L file keeps its text projection: under the tower's prefix, or beside ``text_model.``."""
    parent = prefix[: -len("text_model.")] if prefix.endswith("text_model.") else prefix
    for key in (prefix + "text_projection.weight", parent + "text_projection.weight"):
        if key in shapes:
            return key
    return None


def clip_l_config(shapes: Shapes, prefix: str) -> CLIPTextConfig:
    """CLIP-L with the file's position count; its pooled output is projected when the file has the projection."""
    return CLIPTextConfig(max_positions=_positions(shapes, prefix),
                          projection=projection_key(shapes, prefix) is not None)


CONFIGS = {"clip_l": clip_l_config, "t5xxl": t5.t5_config, "llama": llama_config}


def text_encoder_weights(files: dict[str, File]) -> tuple[WeightsSource, dict[str, Any]]:
    """One WeightsSource for the given (path, shapes, prefix) files by encoder name, and their configs."""
    dtype = lambda: storage_dtype("text_encoder")  # noqa: E731
    readers, keys, identity, configs, size = [], set(), [], {}, 0
    for name in NAMES:
        if name not in files:
            continue
        path, shapes, prefix = files[name]
        if name == "clip_g":
            reader, local, prefix = g_reader(path, shapes, dtype)
            configs[name] = replace(CLIP_G, max_positions=_positions(shapes, prefix))
        else:
            rename = _no_position_ids if name == "clip_l" else (
                (lambda k: k if k.startswith("model.") else None) if name == "llama" else None)
            reader = scaled_reader(path, prefix, dtype, rename)
            local = network_keys(shapes, prefix, rename) if rename else network_keys(shapes, prefix)
            configs[name] = CONFIGS[name](shapes, prefix)
        projection = projection_key(shapes, prefix) if name == "clip_l" else None
        if projection is not None and not projection.startswith(prefix):
            reader = combined_reader([(reader, ""), (part_reader(path, projection[: -len("weight")], dtype),
                                                     "text_projection.")])
            local = set(local) | {"text_projection.weight"}
        readers.append((reader, MODEL_PREFIX[name]))
        keys |= {MODEL_PREFIX[name] + k for k in local}
        if name == "t5xxl":
            keys.add(MODEL_PREFIX[name] + "shared.weight")
        identity.append(f"{file_identity(path)}#{prefix}#{name}")
        size += sum(int(torch.Size(s).numel()) for k, s in shapes.items() if k.startswith(prefix)) * 2
    shared = MODEL_PREFIX["t5xxl"] + "shared.weight"

    def build(sd: dict[str, torch.Tensor]) -> nn.Module:
        if "t5xxl" in configs and shared not in sd:
            embed = sd.get(MODEL_PREFIX["t5xxl"] + "encoder.embed_tokens.weight")
            if embed is not None:
                sd[shared] = embed
        with torch.device("meta"):
            model = HiDreamTextEncoders(configs)
        return load_module(model, sd, "HiDream text encoders")

    weights = WeightsSource(key="+".join(identity), read=combined_reader(readers), build=build,
                            keys=frozenset(keys), size=size or None, dtype=dtype)
    return weights, configs


def first_t5_chunk(chunk: list[tuple[Any, float]], length: int = T5_LENGTH) -> list[tuple[Any, float]]:
    """The T5 sequence cut to ``length`` (its last place the end token), as HiDream reads only that much."""
    if len(chunk) <= length:
        return chunk
    return chunk[: length - 1] + [(t5.END_TOKEN, 1.0)]


def tokenize_llama(text: str, min_length: int = LLAMA_MIN_LENGTH) -> list[list[tuple[Any, float]]]:
    """``<|begin_of_text|>``, each weighted piece's tokens, ``<|eot_id|>`` padding up to ``min_length``."""
    tokenizer = llama3_tokenizer()
    pairs: list[tuple[Any, float]] = [(BEGIN_OF_TEXT, 1.0)]
    for piece, weight in parse_weights(text):
        pairs.extend((t, weight) for t in tokenizer.encode(piece))
    pairs += [(EOT, 1.0)] * max(0, min_length - len(pairs))
    return [pairs]


class HiDreamTokenizer:
    """``{"g", "l"}`` CLIP chunks, ``"t5xxl"`` one sequence of 128, ``"llama"`` one sequence of at least 128."""

    def __init__(self, embedding_directory: EmbeddingDirectory = None, l_length: int = 77,
                 g_length: int = 77) -> None:
        self.embedding_directory = embedding_directory
        self.l_length, self.g_length = l_length, g_length

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, Any]:
        directory = _directory(self.embedding_directory)
        options = kwargs.get("tokenizer_options", {})
        t5_chunk = t5.tokenize_t5(text, min_length=options.get("t5xxl_min_length", T5_LENGTH),
                                  embedding_dir=directory, width=4096)[0]
        out: dict[str, Any] = {
            "g": tokenize_prompt(text, embedding_dir=directory, width=1280, pad_token=0, chunk_length=self.g_length),
            "l": tokenize_prompt(text, embedding_dir=directory, width=768, chunk_length=self.l_length),
            "t5xxl": [first_t5_chunk(t5_chunk)],
            "llama": tokenize_llama(text, options.get("llama_min_length", LLAMA_MIN_LENGTH)),
        }
        if return_word_ids:
            out = {k: [[(p[0], p[1], 0) for p in chunk] for chunk in v] for k, v in out.items()}
        return out

    def untokenize(self, token_weight_pair: list) -> list:
        from ...components.clip.tokenizer import default_tokenizer

        tokenizer = default_tokenizer()
        return [(p, tokenizer.decode([p[0]]) if isinstance(p[0], int) else "<embedding>") for p in token_weight_pair]

    def state_dict(self) -> dict:
        return {}


def llama_mask(ids: list[int]) -> list[int]:
    """1 before the first ``<|eot_id|>`` (the padding), 0 from it on: ComfyUI's rule for an encoder without
    an end token."""
    mask, ended = [], False
    for token in ids:
        ended = ended or token == EOT
        mask.append(0 if ended else 1)
    return mask


@torch.no_grad()
def encode_llama(model: DecoderLM, pairs: list[tuple[Any, float]], device: Any = None) -> torch.Tensor:
    """[1, layers, tokens, width]: each layer's output (the last one normed), the embeddings left out.

    Prompt weights follow ComfyUI's arithmetic, which on this stack of states
    pairs the weight of token ``j`` with layer state ``j``: that whole state is
    moved from the empty prompt's by the weight (empty + (state - empty) * w).
    """
    ids = [int(p[0]) for p in pairs if isinstance(p[0], int)]
    weights = [float(p[1]) for p in pairs if isinstance(p[0], int)]
    device = device or model.model.norm.weight.device
    batch = [ids]
    weighted = any(w != 1.0 for w in weights)
    if weighted:
        batch.append([BEGIN_OF_TEXT] + [EOT] * (len(ids) - 1))
    tokens = torch.tensor(batch, device=device)
    mask = torch.tensor([llama_mask(row) for row in batch], device=device)
    states = model.all_states(model.embed(tokens), attention_mask=mask).float()
    out = states[:1].clone()
    if weighted:
        for j in range(min(out.shape[1], len(weights))):
            if weights[j] != 1.0:
                out[0, j] = (out[0, j] - states[1, j]) * weights[j] + states[1, j]
    return out[:, 1:].cpu()


def _pairs(chunks: list) -> list:
    return [[(p[0], p[1]) for p in chunk] for chunk in chunks]


def encode_hidream(module: HiDreamTextEncoders, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    """(T5 context [1, 128, 4096], pooled [1, 2048], {"conditioning_llama3": [1, 32, tokens, 4096]})."""
    clip_l, clip_g = module.part("clip_l"), module.part("clip_g")
    l_tokens, g_tokens = tokens.get("l", []), tokens.get("g", [])
    pooled = None
    if len(l_tokens) > 0 or len(g_tokens) > 0:
        l_pooled = encode_chunks(clip_l, _pairs(l_tokens))[1] if clip_l is not None and l_tokens \
            else torch.zeros((1, 768))
        g_pooled = encode_chunks(clip_g, _pairs(g_tokens), pad_token=0)[1] if clip_g is not None and g_tokens \
            else torch.zeros((1, 1280))
        pooled = torch.cat((l_pooled, g_pooled), dim=-1)
    device = options.get("execution_device")
    device = torch.device(device) if isinstance(device, str) else device
    t5_model, llama = module.part("t5xxl"), module.part("llama")
    if t5_model is not None:
        context, _, _ = t5.encode_t5(t5_model, tokens.get("t5xxl", []), attention_mask=True, device=device)
    else:
        context = torch.zeros((1, T5_LENGTH, 4096))
    if llama is not None:
        states = encode_llama(llama, tokens["llama"][0], device)
    else:
        states = torch.zeros((1, 32, 1, 4096))
    if pooled is None:
        pooled = torch.zeros((1, 768 + 1280))
    return context, pooled, {"conditioning_llama3": states}


def hidream_clip(files: dict[str, File], embedding_directory: EmbeddingDirectory = None) -> CLIP:
    weights, configs = text_encoder_weights(files)
    model = TextEncoderModel(weights, "", encode_hidream, "hidream_clip")
    l_length = configs["clip_l"].max_positions if "clip_l" in configs else 77
    g_length = configs["clip_g"].max_positions if "clip_g" in configs else 77
    return CLIP(tokenizer=HiDreamTokenizer(embedding_directory, l_length, g_length), cond_stage_model=model)


DETECTORS = (("clip_l", clip_l_prefix), ("clip_g", lambda s: hf_g_prefix(s) or openclip_g_prefix(s)),
             ("t5xxl", t5.t5_prefix), ("llama", llama3_prefix))


def classify(paths: list[str]) -> dict[str, File]:
    """Each file's encoder (CLIP-L, CLIP-G, T5-XXL or Llama 3), by its keys; one of each at most."""
    from ...model.loading import UnsupportedModel

    found: dict[str, File] = {}
    for path in paths:
        shapes = tensor_shapes(path)
        name, prefix = next(((n, p) for n, detect in DETECTORS if (p := detect(shapes)) is not None), ("", None))
        if prefix is None:
            raise UnsupportedModel(f"{os.path.basename(path)}: not a CLIP-L, CLIP-G, T5-XXL or Llama 3.1 text "
                                   "encoder (CLIP type 'hidream')")
        if name in found:
            raise UnsupportedModel(f"CLIP type 'hidream' takes one {name} file, got two")
        found[name] = (path, shapes, prefix)
    return found


def load_hidream_clip(paths: list[str], embedding_directory: EmbeddingDirectory = None) -> CLIP:
    """CLIP type ``hidream``: any of CLIP-L, CLIP-G, T5-XXL and Llama 3.1 8B, in any order (QuadrupleCLIPLoader,
    DualCLIPLoader, CLIPLoader)."""
    return hidream_clip(classify(paths), embedding_directory)
