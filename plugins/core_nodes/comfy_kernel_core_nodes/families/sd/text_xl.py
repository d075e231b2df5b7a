"""SDXL's text encoders: CLIP-L and OpenCLIP ViT-bigG/14, concatenated, with G's projected pooled output.

Both run from the penultimate layer without the final LayerNorm; the
conditioning is CLIP-L's [.., 768] and CLIP-G's [.., 1280] states side by side
([.., 2048]), and ``pooled_output`` is CLIP-G's projected end-token state. The
refiner uses CLIP-G alone. Model keys are ComfyUI's
(``clip_l.transformer.text_model.*``, ``clip_g.transformer.text_model.*``).

Checkpoints keep G in OpenCLIP's layout (``transformer.resblocks.N.attn.in_proj_weight``
...); it is converted to the Hugging Face names on read (q, k, v split;
``text_projection`` transposed into a Linear weight).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...components.clip.files import (  # noqa: F401  (text_h and others import them from here)
    HF_G_PREFIXES,
    OPENCLIP_G_PREFIXES,
    hf_g_prefix,
    hf_names,
    openclip_g_prefix,
    openclip_to_hf,
)
from ...components.clip.files import g_reader as _g_reader
from ...components.clip.prompt import tokenize_prompt
from ...components.clip.text_model import CLIP_G, CLIPTextConfig, CLIPTextModel, encode_chunks
from ...model.base import WeightsSource
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.devices import storage_dtype
from ...model.files import combined_reader, file_identity, load_module, part_reader, part_size
from .text import EmbeddingDirectory, _directory, clip_l_prefix


class _Named(nn.Module):
    """``<name>.transformer.text_model`` wrappers, so state dict keys are ComfyUI's model keys."""

    def __init__(self, **encoders: nn.Module) -> None:
        super().__init__()
        for name, model in encoders.items():
            holder = nn.Module()
            holder.transformer = nn.Module()
            holder.transformer.text_model = model
            self.add_module(name, holder)

    def encoder(self, name: str) -> CLIPTextModel:
        return getattr(self, name).transformer.text_model


def _l_reader(path: str, shapes: Shapes, prefix: str, dtype: Any) -> tuple[Any, frozenset[str], str]:
    reader = part_reader(path, prefix, dtype, rename=lambda k: None if k.endswith("position_ids") else k)
    keys = frozenset(k[len(prefix):] for k in shapes if k.startswith(prefix) and not k.endswith("position_ids"))
    return reader, keys, prefix


def _build(names: tuple[str, ...]) -> Any:
    configs = {"clip_l": CLIPTextConfig(), "clip_g": CLIP_G}

    def build(sd: dict[str, torch.Tensor]) -> nn.Module:
        with torch.device("meta"):
            model = _Named(**{n: CLIPTextModel(configs[n]) for n in names})
        return load_module(model, sd, "SDXL text encoders")

    return build


def text_encoder_weights(files: list[tuple[str, Shapes, str | None]]) -> WeightsSource:
    """One WeightsSource for CLIP-L and/or CLIP-G: ``files`` is [(path, shapes, clip-L prefix or None)].

    A file with a clip-L prefix contributes CLIP-L from there; the others contribute CLIP-G.
    """
    dtype = lambda: storage_dtype("text_encoder")  # noqa: E731
    readers, keys, names, identity, size = [], set(), [], [], 0
    for path, shapes, l_prefix in files:
        if l_prefix is not None:
            reader, local, file_prefix = _l_reader(path, shapes, l_prefix, dtype)
            name = "clip_l"
        else:
            reader, local, file_prefix = _g_reader(path, shapes, dtype)
            name = "clip_g"
        prefix = f"{name}.transformer.text_model."
        readers.append((reader, prefix))
        keys |= {prefix + k for k in local}
        names.append(name)
        identity.append(f"{file_identity(path)}#{name}")
        size += part_size(path, file_prefix, torch.float16) or 0
    return WeightsSource(key="+".join(identity), read=combined_reader(readers), build=_build(tuple(names)),
                         keys=frozenset(keys), size=size or None, dtype=dtype)


class SDXLTokenizer:
    """``{"g": chunks padded with 0, "l": chunks padded with the end token}`` of the same text."""

    def __init__(self, embedding_directory: EmbeddingDirectory = None, encoders: tuple[str, ...] = ("g", "l")) -> None:
        self.embedding_directory = embedding_directory
        self.encoders = encoders

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, Any]:
        directory = _directory(self.embedding_directory)
        out = {}
        if "g" in self.encoders:
            out["g"] = tokenize_prompt(text, embedding_dir=directory, width=1280, pad_token=0)
        if "l" in self.encoders:
            out["l"] = tokenize_prompt(text, embedding_dir=directory, width=768)
        if return_word_ids:
            out = {k: [[(t, w, 0) for t, w in chunk] for chunk in v] for k, v in out.items()}
        return out

    def untokenize(self, token_weight_pair: list) -> list:
        from .text import SD1Tokenizer

        return SD1Tokenizer().untokenize(token_weight_pair)

    def state_dict(self) -> dict:
        return {}


def _pairs(chunks: list) -> list:
    return [[(p[0], p[1]) for p in chunk] for chunk in chunks]


def encode_sdxl(module: _Named, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    """CLIP-L and CLIP-G from the penultimate layer (or ``layer``), no final LayerNorm, G's pooled output."""
    layer = options.get("layer", -2)
    projected = options.get("projected_pooled", True)
    g_out, g_pooled = encode_chunks(module.encoder("clip_g"), _pairs(tokens["g"]), layer, layer_norm_hidden=False,
                                    pad_token=0, projected_pooled=projected)
    if "l" not in tokens or not hasattr(module, "clip_l"):
        return g_out, g_pooled
    l_out, _ = encode_chunks(module.encoder("clip_l"), _pairs(tokens["l"]), layer, layer_norm_hidden=False)
    cut = min(l_out.shape[1], g_out.shape[1])
    return torch.cat([l_out[:, :cut], g_out[:, :cut]], dim=-1), g_pooled


def sdxl_clip(files: list[tuple[str, Shapes, str | None]], embedding_directory: EmbeddingDirectory = None) -> CLIP:
    weights = text_encoder_weights(files)
    encoders = tuple(sorted(("l" if p is not None else "g") for _, _, p in files))
    encoders = ("g", "l") if encoders == ("g", "l") else encoders
    model = TextEncoderModel(weights, "", encode_sdxl, "sdxl_clip")
    return CLIP(tokenizer=SDXLTokenizer(embedding_directory, encoders), cond_stage_model=model)


def sdxl_clip_from_checkpoint(path: str, shapes: Shapes, embedding_directory: EmbeddingDirectory = None,
                              with_l: bool = True) -> CLIP | None:
    files: list[tuple[str, Shapes, str | None]] = []
    if with_l:
        l_prefix = clip_l_prefix({k: v for k, v in shapes.items() if k.startswith("conditioner.embedders.0.")})
        if l_prefix is None:
            return None
        files.append((path, shapes, l_prefix))
    if openclip_g_prefix(shapes) is None and hf_g_prefix(shapes) is None:
        return None
    files.append((path, shapes, None))
    return sdxl_clip(files, embedding_directory)


def load_sdxl_clip(paths: list[str], embedding_directory: EmbeddingDirectory = None) -> CLIP:
    """DualCLIPLoader type ``sdxl`` (CLIP-L and CLIP-G files, in either order)."""
    import os

    from ...model.files import tensor_shapes
    from ...model.loading import UnsupportedModel

    files: list[tuple[str, Shapes, str | None]] = []
    for path in paths:
        shapes = tensor_shapes(path)
        l_prefix = clip_l_prefix(shapes)
        if l_prefix is not None:
            files.append((path, shapes, l_prefix))
        elif openclip_g_prefix(shapes) is not None or hf_g_prefix(shapes) is not None:
            files.append((path, shapes, None))
        else:
            raise UnsupportedModel(f"{os.path.basename(path)}: neither a CLIP-L nor a CLIP-G text encoder")
    kinds = sorted("l" if p is not None else "g" for _, _, p in files)
    if kinds != ["g", "l"]:
        raise UnsupportedModel("CLIP type 'sdxl' takes one CLIP-L and one CLIP-G file")
    return sdxl_clip(files, embedding_directory)
