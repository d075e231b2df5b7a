"""SD3's text encoders: CLIP-L, CLIP-G and T5-XXL, any of them optional (TripleCLIPLoader, DualCLIPLoader ``sd3``).

ComfyUI's rules: CLIP-L and CLIP-G run from their penultimate layer without
the final LayerNorm; their states sit side by side (768 + 1280 channels) and
are zero-padded to T5's 4096, then T5's states follow along the token axis.
The pooled vector is CLIP-L's unprojected pooled output beside CLIP-G's
projected one (2048); a missing CLIP contributes zeros. Tokens are
``{"l", "g", "t5xxl"}`` (T5 padded to 77). Model keys are ComfyUI's
(``clip_l.transformer.text_model.*``, ``clip_g.transformer.text_model.*``,
``t5xxl.transformer.*``), so LoRA key maps agree. T5 files in fp8 or scaled
fp8 (as the templates ship them) are read into the text encoder's storage
dtype with their scales multiplied out.
"""

from __future__ import annotations

import os
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
from ...components.clip.prompt import tokenize_prompt
from ...components.clip.text_model import CLIP_G, CLIPTextConfig, CLIPTextModel, encode_chunks
from ...model.base import WeightsSource
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.devices import storage_dtype
from ...model.files import combined_reader, file_identity, load_module, tensor_shapes
from ...model.weight_formats import network_keys, scaled_reader

T5_MIN_LENGTH = 77
_MODEL_PREFIX = {"clip_l": "clip_l.transformer.text_model.", "clip_g": "clip_g.transformer.text_model.",
                 "t5xxl": "t5xxl.transformer."}

File = tuple[str, Shapes, str]


class SD3TextEncoders(nn.Module):
    """Whichever of ``clip_l`` / ``clip_g`` / ``t5xxl`` were loaded, under ComfyUI's key layout."""

    def __init__(self, names: tuple[str, ...], t5_config: t5.T5Config | None) -> None:
        super().__init__()
        for name in names:
            holder = nn.Module()
            if name == "t5xxl":
                holder.transformer = t5.T5Encoder(t5_config)
            else:
                holder.transformer = nn.Module()
                holder.transformer.text_model = CLIPTextModel(CLIP_G if name == "clip_g" else CLIPTextConfig())
            self.add_module(name, holder)

    def clip(self, name: str) -> CLIPTextModel | None:
        holder = getattr(self, name, None)
        return holder.transformer.text_model if holder is not None else None


def _no_position_ids(key: str) -> str | None:
    return None if key.endswith("position_ids") else key


def text_encoder_weights(l_file: File | None, g_file: File | None, t5_file: File | None) -> WeightsSource:
    """One WeightsSource for the given (path, shapes, prefix) files; G's prefix is found again by its reader."""
    dtype = lambda: storage_dtype("text_encoder")  # noqa: E731
    readers, keys, identity, names, size = [], set(), [], [], 0
    t5_config = None
    if l_file is not None:
        path, shapes, prefix = l_file
        readers.append((scaled_reader(path, prefix, dtype, _no_position_ids), _MODEL_PREFIX["clip_l"]))
        keys |= {_MODEL_PREFIX["clip_l"] + k for k in network_keys(shapes, prefix, _no_position_ids)}
        identity.append(f"{file_identity(path)}#{prefix}#clip_l")
        names.append("clip_l")
    if g_file is not None:
        path, shapes, _ = g_file
        reader, local, prefix = g_reader(path, shapes, dtype)
        readers.append((reader, _MODEL_PREFIX["clip_g"]))
        keys |= {_MODEL_PREFIX["clip_g"] + k for k in local}
        identity.append(f"{file_identity(path)}#{prefix}#clip_g")
        names.append("clip_g")
    if t5_file is not None:
        path, shapes, prefix = t5_file
        t5_config = t5.t5_config(shapes, prefix)
        readers.append((scaled_reader(path, prefix, dtype), _MODEL_PREFIX["t5xxl"]))
        keys |= {_MODEL_PREFIX["t5xxl"] + k for k in network_keys(shapes, prefix)}
        keys.add(_MODEL_PREFIX["t5xxl"] + "shared.weight")
        identity.append(f"{file_identity(path)}#{prefix}#t5xxl")
        names.append("t5xxl")
    for f in (l_file, g_file, t5_file):
        if f is not None:
            _, shapes, prefix = f
            size += sum(int(torch.Size(s).numel()) for k, s in shapes.items() if k.startswith(prefix)) * 2
    order = tuple(names)
    shared = _MODEL_PREFIX["t5xxl"] + "shared.weight"

    def build(sd: dict[str, torch.Tensor]) -> nn.Module:
        if t5_config is not None and shared not in sd:
            embed = sd.get(_MODEL_PREFIX["t5xxl"] + "encoder.embed_tokens.weight")
            if embed is not None:
                sd[shared] = embed
        with torch.device("meta"):
            model = SD3TextEncoders(order, t5_config)
        return load_module(model, sd, "SD3 text encoders")

    return WeightsSource(key="+".join(identity), read=combined_reader(readers), build=build,
                         keys=frozenset(keys), size=size or None, dtype=dtype)


class SD3Tokenizer:
    """``{"g": chunks padded with 0, "l": chunks padded with the end token, "t5xxl": one sequence}``."""

    def __init__(self, embedding_directory: EmbeddingDirectory = None) -> None:
        self.embedding_directory = embedding_directory

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, Any]:
        directory = _directory(self.embedding_directory)
        options = kwargs.get("tokenizer_options", {})
        out: dict[str, Any] = {
            "g": tokenize_prompt(text, embedding_dir=directory, width=1280, pad_token=0),
            "l": tokenize_prompt(text, embedding_dir=directory, width=768),
            "t5xxl": t5.tokenize_t5(text, min_length=options.get("t5xxl_min_length", T5_MIN_LENGTH),
                                    embedding_dir=directory, width=4096,
                                    min_padding=options.get("t5xxl_min_padding")),
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


def _pairs(chunks: list) -> list:
    return [[(p[0], p[1]) for p in chunk] for chunk in chunks]


def encode_sd3(module: SD3TextEncoders, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    """(context [1, n, 4096], pooled [1, 2048]) as ComfyUI's SD3 text encoder combines them."""
    layer = options.get("layer", -2)
    clip_l, clip_g = module.clip("clip_l"), module.clip("clip_g")
    l_tokens, g_tokens = tokens.get("l", []), tokens.get("g", [])
    out = lg_out = pooled = None
    if len(l_tokens) > 0 or len(g_tokens) > 0:
        if clip_l is not None:
            lg_out, l_pooled = encode_chunks(clip_l, _pairs(l_tokens), layer, layer_norm_hidden=False,
                                             projected_pooled=False)
        else:
            l_pooled = torch.zeros((1, 768))
        if clip_g is not None:
            g_out, g_pooled = encode_chunks(clip_g, _pairs(g_tokens), layer, layer_norm_hidden=False, pad_token=0)
            if lg_out is not None:
                cut = min(lg_out.shape[1], g_out.shape[1])
                lg_out = torch.cat([lg_out[:, :cut], g_out[:, :cut]], dim=-1)
            else:
                lg_out = torch.nn.functional.pad(g_out, (768, 0))
        else:
            g_pooled = torch.zeros((1, 1280))
        if lg_out is not None:
            lg_out = torch.nn.functional.pad(lg_out, (0, 4096 - lg_out.shape[-1]))
            out = lg_out
        pooled = torch.cat((l_pooled, g_pooled), dim=-1)
    if hasattr(module, "t5xxl"):
        device = options.get("execution_device")
        device = torch.device(device) if isinstance(device, str) else device
        t5_out, _, _ = t5.encode_t5(module.t5xxl.transformer, tokens.get("t5xxl", []), device=device)
        if t5_out.shape[-1] < 4096:  # reduced test encoders: the context keeps SD3's width
            t5_out = torch.nn.functional.pad(t5_out, (0, 4096 - t5_out.shape[-1]))
        out = t5_out if lg_out is None else torch.cat([lg_out, t5_out], dim=-2)
    if out is None:
        out = torch.zeros((1, 77, 4096))
    if pooled is None:
        pooled = torch.zeros((1, 768 + 1280))
    return out, pooled


def sd3_clip(l_file: File | None, g_file: File | None, t5_file: File | None,
             embedding_directory: EmbeddingDirectory = None) -> CLIP:
    weights = text_encoder_weights(l_file, g_file, t5_file)
    model = TextEncoderModel(weights, "", encode_sd3, "sd3_clip")
    return CLIP(tokenizer=SD3Tokenizer(embedding_directory), cond_stage_model=model)


def _classify(paths: list[str]) -> dict[str, list[File]]:
    from ...model.loading import UnsupportedModel

    found: dict[str, list[File]] = {"l": [], "g": [], "t5": []}
    for path in paths:
        shapes = tensor_shapes(path)
        if (prefix := clip_l_prefix(shapes)) is not None:
            found["l"].append((path, shapes, prefix))
        elif (prefix := hf_g_prefix(shapes) or openclip_g_prefix(shapes)) is not None:
            found["g"].append((path, shapes, prefix))
        elif (prefix := t5.t5_prefix(shapes)) is not None:
            found["t5"].append((path, shapes, prefix))
        else:
            raise UnsupportedModel(f"{os.path.basename(path)}: not a CLIP-L, CLIP-G or T5-XXL text encoder")
    if any(len(v) > 1 for v in found.values()):
        raise UnsupportedModel("CLIP type 'sd3' takes at most one CLIP-L, one CLIP-G and one T5-XXL file")
    return found


def load_sd3_clip(paths: list[str], embedding_directory: EmbeddingDirectory = None) -> CLIP:
    """CLIP type ``sd3``: any of CLIP-L, CLIP-G and T5-XXL, in any order (TripleCLIPLoader, DualCLIPLoader,
    CLIPLoader)."""
    found = _classify(paths)
    first = lambda k: found[k][0] if found[k] else None  # noqa: E731
    return sd3_clip(first("l"), first("g"), first("t5"), embedding_directory)


def sd3_clip_from_checkpoint(path: str, shapes: Shapes, embedding_directory: EmbeddingDirectory = None) -> CLIP | None:
    """The text encoders a single-file SD3 checkpoint carries under ``text_encoders.`` (None if none)."""
    def part(name: str) -> Shapes:
        return {k: v for k, v in shapes.items() if k.startswith(f"text_encoders.{name}.")}

    l_shapes, g_shapes, t5_shapes = part("clip_l"), part("clip_g"), part("t5xxl")
    l_prefix, t5_prefix = clip_l_prefix(l_shapes), t5.t5_prefix(t5_shapes)
    g_prefix = hf_g_prefix(g_shapes)
    if l_prefix is None and g_prefix is None and t5_prefix is None:
        return None
    return sd3_clip((path, l_shapes, l_prefix) if l_prefix else None,
                    (path, g_shapes, g_prefix) if g_prefix else None,
                    (path, t5_shapes, t5_prefix) if t5_prefix else None, embedding_directory)
