"""Flux.1's text encoders (CLIP-L's pooled output + T5-XXL's states) and Chroma's (T5-XXL alone).

The conditioning is T5's [1, n, 4096] states (n = 256 tokens at least for
Flux, no padding for Chroma); Flux's ``pooled_output`` is CLIP-L's final
layer's pooled state, unprojected. Model keys are ComfyUI's
(``clip_l.transformer.text_model.*``, ``t5xxl.transformer.*``), so LoRA key
maps agree. T5 files in fp8 or scaled fp8 are read into the text encoder's
storage dtype with their scales multiplied out.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ...components import t5
from ...components.clip.files import EmbeddingDirectory, clip_l_prefix
from ...components.clip.files import embedding_dir as _directory
from ...components.clip.prompt import tokenize_prompt
from ...components.clip.text_model import CLIPTextConfig, CLIPTextModel, encode_chunks
from ...model.base import WeightsSource
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.devices import storage_dtype
from ...model.files import combined_reader, file_identity, load_module, tensor_shapes
from ...model.weight_formats import network_keys, scaled_reader

T5_MODEL_PREFIX = "t5xxl.transformer."
CLIP_L_MODEL_PREFIX = "clip_l.transformer.text_model."


class TextEncoders(nn.Module):
    """``clip_l.transformer.text_model`` and/or ``t5xxl.transformer``: ComfyUI's model key layout."""

    def __init__(self, clip_l: bool, t5_config: t5.T5Config | None) -> None:
        super().__init__()
        if clip_l:
            self.clip_l = nn.Module()
            self.clip_l.transformer = nn.Module()
            self.clip_l.transformer.text_model = CLIPTextModel(CLIPTextConfig())
        if t5_config is not None:
            self.t5xxl = nn.Module()
            self.t5xxl.transformer = t5.T5Encoder(t5_config)


def _no_position_ids(key: str) -> str | None:
    return None if key.endswith("position_ids") else key


def text_encoder_weights(l_file: tuple[str, Shapes, str] | None, t5_file: tuple[str, Shapes, str] | None,
                         ) -> WeightsSource:
    """One WeightsSource for CLIP-L (path, shapes, prefix) and/or T5 (path, shapes, prefix)."""
    dtype = lambda: storage_dtype("text_encoder")  # noqa: E731
    readers, keys, identity, size = [], set(), [], 0
    t5_config = None
    if l_file is not None:
        path, shapes, prefix = l_file
        readers.append((scaled_reader(path, prefix, dtype, _no_position_ids), CLIP_L_MODEL_PREFIX))
        keys |= {CLIP_L_MODEL_PREFIX + k for k in network_keys(shapes, prefix, _no_position_ids)}
        identity.append(f"{file_identity(path)}#{prefix}#clip_l")
    if t5_file is not None:
        path, shapes, prefix = t5_file
        t5_config = t5.t5_config(shapes, prefix)
        readers.append((scaled_reader(path, prefix, dtype), T5_MODEL_PREFIX))
        local = network_keys(shapes, prefix)
        keys |= {T5_MODEL_PREFIX + k for k in local}
        identity.append(f"{file_identity(path)}#{prefix}#t5xxl")
    for _path, shapes, prefix in (f for f in (l_file, t5_file) if f is not None):
        size += sum(int(torch.Size(s).numel()) for k, s in shapes.items() if k.startswith(prefix)) * 2
    has_l = l_file is not None

    def build(sd: dict[str, torch.Tensor]) -> nn.Module:
        if t5_config is not None and T5_MODEL_PREFIX + "shared.weight" not in sd:
            embed = sd.get(T5_MODEL_PREFIX + "encoder.embed_tokens.weight")
            if embed is not None:
                sd[T5_MODEL_PREFIX + "shared.weight"] = embed
        with torch.device("meta"):
            model = TextEncoders(has_l, t5_config)
        return load_module(model, sd, "text encoders")

    if t5_config is not None and T5_MODEL_PREFIX + "shared.weight" not in keys:
        keys.add(T5_MODEL_PREFIX + "shared.weight")
    return WeightsSource(key="+".join(identity), read=combined_reader(readers), build=build,
                         keys=frozenset(keys), size=size or None, dtype=dtype)


class FluxTokenizer:
    """``{"l": CLIP-L chunks, "t5xxl": one T5 sequence}`` of the same text."""

    def __init__(self, embedding_directory: EmbeddingDirectory = None, clip_l: bool = True,
                 t5_min_length: int | None = 256) -> None:
        self.embedding_directory = embedding_directory
        self.clip_l = clip_l
        self.t5_min_length = t5_min_length

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, Any]:
        directory = _directory(self.embedding_directory)
        options = kwargs.get("tokenizer_options", {})
        out: dict[str, Any] = {}
        if self.clip_l:
            out["l"] = tokenize_prompt(text, embedding_dir=directory, width=768)
        min_length = options.get("t5xxl_min_length", self.t5_min_length)
        out["t5xxl"] = t5.tokenize_t5(text, min_length=min_length, embedding_dir=directory, width=4096,
                                      min_padding=options.get("t5xxl_min_padding"))
        if return_word_ids:
            out = {k: [[(p[0], p[1], 0) for p in chunk] for chunk in v] for k, v in out.items()}
        return out

    def untokenize(self, token_weight_pair: list) -> list:
        tokenizer = t5.default_tokenizer()
        return [(p, tokenizer.decode([p[0]]) if isinstance(p[0], int) else "<embedding>") for p in token_weight_pair]

    def state_dict(self) -> dict:
        return {}


def _device(options: dict[str, Any]) -> Any:
    device = options.get("execution_device")
    return torch.device(device) if isinstance(device, str) else device


def encode_flux(module: TextEncoders, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    """T5's states as the context, CLIP-L's unprojected pooled output as ``pooled_output``."""
    cond, _, _ = t5.encode_t5(module.t5xxl.transformer, tokens["t5xxl"], device=_device(options))
    pooled = None
    if "l" in tokens and hasattr(module, "clip_l"):
        chunks = [[(p[0], p[1]) for p in chunk] for chunk in tokens["l"]]
        _, pooled = encode_chunks(module.clip_l.transformer.text_model, chunks, options.get("layer"),
                                  projected_pooled=False)
    return cond, pooled


def encode_chroma(module: TextEncoders, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    """T5 alone (no pooled output); weights interpolate against an all-padding prompt, as PixArt's does."""
    chunks = tokens["t5xxl"]
    weighted = any(p[1] != 1.0 for chunk in chunks for p in chunk)
    if not weighted:
        cond, _, _ = t5.encode_t5(module.t5xxl.transformer, chunks, device=_device(options))
        return cond, None
    model = module.t5xxl.transformer
    pairs = [[(p[0], p[1]) for p in chunk] for chunk in chunks]
    length = max(len(c) for c in pairs)
    batch = pairs + [[(t5.PAD_TOKEN, 1.0)] * length]
    out, _ = model(model.embed(batch, device=_device(options)))
    out = out.float()
    empty = out[-1]
    z = out[0].clone()
    for j, (_, w) in enumerate(pairs[0]):
        if w != 1.0:
            z[j] = (z[j] - empty[j]) * w + empty[j]
    return z[None].cpu(), None


def _clip(weights: WeightsSource, encode: Any, tokenizer: Any, name: str) -> CLIP:
    return CLIP(tokenizer=tokenizer, cond_stage_model=TextEncoderModel(weights, "", encode, name))


def flux_clip(l_file: tuple[str, Shapes, str], t5_file: tuple[str, Shapes, str],
              embedding_directory: EmbeddingDirectory = None) -> CLIP:
    return _clip(text_encoder_weights(l_file, t5_file), encode_flux, FluxTokenizer(embedding_directory), "flux_clip")


def chroma_clip(t5_file: tuple[str, Shapes, str], embedding_directory: EmbeddingDirectory = None) -> CLIP:
    tokenizer = FluxTokenizer(embedding_directory, clip_l=False, t5_min_length=1)
    return _clip(text_encoder_weights(None, t5_file), encode_chroma, tokenizer, "chroma_t5")


def _classify(paths: list[str]) -> tuple[list[tuple[str, Shapes, str]], list[tuple[str, Shapes, str]]]:
    from ...model.loading import UnsupportedModel

    clips, t5s = [], []
    for path in paths:
        shapes = tensor_shapes(path)
        l_prefix = clip_l_prefix(shapes)
        t5_prefix = t5.t5_prefix(shapes)
        if l_prefix is not None:
            clips.append((path, shapes, l_prefix))
        elif t5_prefix is not None:
            t5s.append((path, shapes, t5_prefix))
        else:
            raise UnsupportedModel(f"{os.path.basename(path)}: neither a CLIP-L nor a T5 text encoder")
    return clips, t5s


def load_flux_clip(paths: list[str], embedding_directory: EmbeddingDirectory = None) -> CLIP:
    """DualCLIPLoader type ``flux``: a CLIP-L and a T5-XXL file, in either order."""
    from ...model.loading import UnsupportedModel

    clips, t5s = _classify(paths)
    if len(clips) != 1 or len(t5s) != 1:
        raise UnsupportedModel("CLIP type 'flux' takes one CLIP-L and one T5-XXL text encoder file")
    return flux_clip(clips[0], t5s[0], embedding_directory)


def load_chroma_clip(paths: list[str], embedding_directory: EmbeddingDirectory = None) -> CLIP:
    """CLIPLoader type ``chroma``: a T5-XXL file."""
    from ...model.loading import UnsupportedModel

    clips, t5s = _classify(paths)
    if clips or len(t5s) != 1:
        raise UnsupportedModel("CLIP type 'chroma' takes one T5-XXL text encoder file")
    return chroma_clip(t5s[0], embedding_directory)


def flux_clip_from_checkpoint(path: str, shapes: Shapes, embedding_directory: EmbeddingDirectory = None,
                              with_l: bool = True) -> CLIP | None:
    """The text encoders inside a single-file Flux checkpoint (``text_encoders.clip_l`` / ``.t5xxl``)."""
    t5_shapes = {k: v for k, v in shapes.items() if k.startswith("text_encoders.t5xxl.")}
    t5_prefix = t5.t5_prefix(t5_shapes)
    if t5_prefix is None:
        return None
    if not with_l:
        return chroma_clip((path, shapes, t5_prefix), embedding_directory)
    l_prefix = clip_l_prefix({k: v for k, v in shapes.items() if k.startswith("text_encoders.clip_l.")})
    if l_prefix is None:
        return None
    return flux_clip((path, shapes, l_prefix), (path, shapes, t5_prefix), embedding_directory)
