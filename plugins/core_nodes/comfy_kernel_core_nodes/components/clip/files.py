"""Where files keep the CLIP text encoders, and reading them in this package's (Hugging Face) layout.

CLIP-L (OpenAI ViT-L/14) and CLIP-G (OpenCLIP ViT-bigG/14) come in many
layouts: inside SD1.x / SDXL / SD3 checkpoints, as Hugging Face files
(``text_model.*``), under ``clip_l.`` / ``clip_g.`` in multi-encoder files,
and CLIP-G in OpenCLIP's own names (``transformer.resblocks.N.attn.in_proj_weight``
...), converted on read (q, k, v split; ``text_projection`` transposed into a
Linear weight). Several families (SD, SD3, Flux, HiDream) read them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from ...model.detection import Shapes
from ...model.files import combined_reader, part_reader

CLIP_L_PREFIXES = (
    "cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.", "text_model.",
    "transformer.text_model.", "clip_l.transformer.text_model.", "text_encoders.clip_l.transformer.text_model.",
    "conditioner.embedders.0.transformer.text_model.", "",
)
EmbeddingDirectory = str | list[str] | Callable[[], str | None] | None


def clip_l_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps a CLIP-L text transformer (width 768, 12 layers), or None."""
    for prefix in CLIP_L_PREFIXES:
        emb = shapes.get(prefix + "embeddings.token_embedding.weight")
        if emb is not None and emb[1] == 768 and prefix + "encoder.layers.11.mlp.fc2.weight" in shapes \
                and prefix + "encoder.layers.12.mlp.fc2.weight" not in shapes:
            return prefix
    return None


def embedding_dir(embedding_directory: EmbeddingDirectory) -> str | None:
    value = embedding_directory() if callable(embedding_directory) else embedding_directory
    if isinstance(value, (list, tuple)):
        value = next((d for d in value if os.path.isdir(d)), None)
    return value


OPENCLIP_G_PREFIXES = ("conditioner.embedders.1.model.", "conditioner.embedders.0.model.",
                       "cond_stage_model.model.", "")
#: "": no ``text_model.`` level, as transformers 5 saves a CLIPTextModel
HF_G_PREFIXES = ("text_model.", "clip_g.transformer.text_model.", "text_encoders.clip_g.transformer.text_model.",
                 "conditioner.embedders.1.transformer.text_model.", "")


def openclip_g_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps OpenCLIP-G's text tower in OpenCLIP's layout (width 1280, 32 blocks)."""
    for prefix in OPENCLIP_G_PREFIXES:
        emb = shapes.get(prefix + "token_embedding.weight")
        if emb is not None and emb[1] == 1280 and prefix + "transformer.resblocks.31.ln_1.weight" in shapes:
            return prefix
    return None


def hf_g_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps CLIP-G in the Hugging Face layout."""
    for prefix in HF_G_PREFIXES:
        emb = shapes.get(prefix + "embeddings.token_embedding.weight")
        if emb is not None and emb[1] == 1280 and prefix + "encoder.layers.31.mlp.fc2.weight" in shapes:
            return prefix
    return None


_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def hf_names(key: str) -> list[str]:
    """The Hugging Face name(s) of one OpenCLIP text tower key (in_proj splits into q, k, v); [] to drop."""
    if key == "token_embedding.weight":
        return ["embeddings.token_embedding.weight"]
    if key == "positional_embedding":
        return ["embeddings.position_embedding.weight"]
    if key.startswith("ln_final."):
        return ["final_layer_norm." + key[len("ln_final."):]]
    if key == "text_projection":
        return ["text_projection.weight"]
    if key.startswith("transformer.resblocks."):
        index, rest = key[len("transformer.resblocks."):].split(".", 1)
        layer = f"encoder.layers.{index}."
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            return [f"{layer}self_attn.{name}.{kind}" for name in ("q_proj", "k_proj", "v_proj")]
        for openclip, hf in _BLOCK.items():
            if rest.startswith(openclip + "."):
                return [layer + hf + rest[len(openclip):]]
    return []


def openclip_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP text tower tensors -> the Hugging Face CLIP names this package's model uses."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        names = hf_names(key)
        if key == "text_projection":
            tensor = tensor.transpose(0, 1).contiguous()  # used as h @ P: a Linear's weight is P transposed
        parts = tensor.chunk(3, dim=0) if len(names) == 3 else (tensor,) * len(names)
        out.update(zip(names, parts, strict=True))
    return out


def _g_keys(shapes: Shapes, prefix: str, openclip: bool) -> frozenset[str]:
    local = [k[len(prefix):] for k in shapes if k.startswith(prefix)]
    if not openclip:
        return frozenset(local)
    return frozenset(name for k in local for name in hf_names(k))


def _openclip_tower(key: str) -> bool:
    return key.startswith(("token_embedding", "positional_embedding", "ln_final", "text_projection",
                           "transformer.resblocks"))


def _g_tower_reader(path: str, shapes: Shapes, dtype: Any) -> tuple[Any, frozenset[str], str]:
    prefix = openclip_g_prefix(shapes)
    if prefix is not None:
        reader = part_reader(path, prefix, dtype, rename=lambda k: k if _openclip_tower(k) else None,
                             convert=openclip_to_hf)
        tower = {k: v for k, v in shapes.items() if k.startswith(prefix) and _openclip_tower(k[len(prefix):])}
        return reader, _g_keys(tower, prefix, True), prefix
    prefix = hf_g_prefix(shapes)
    if prefix is None:
        raise ValueError("no OpenCLIP-G text encoder in this file")
    reader = part_reader(path, prefix, dtype, rename=lambda k: None if k.endswith("position_ids") else k)
    return reader, frozenset(k for k in _g_keys(shapes, prefix, False) if not k.endswith("position_ids")), prefix


def g_reader(path: str, shapes: Shapes, dtype: Any) -> tuple[Any, frozenset[str], str]:
    """CLIP-G's ``read(device)``, its keys and the prefix it was found under.

    In the Hugging Face layout the projection sits beside ``text_model``
    (``clip_g.safetensors``: ``text_projection.weight``; SD3 checkpoints:
    ``text_encoders.clip_g.transformer.text_projection.weight``): it is read from there.
    """
    reader, keys, prefix = _g_tower_reader(path, shapes, dtype)
    parent = prefix[: -len("text_model.")] if prefix.endswith("text_model.") else None
    if parent is None or parent + "text_projection.weight" not in shapes or "text_projection.weight" in keys:
        return reader, keys, prefix
    projection = part_reader(path, parent + "text_projection.", dtype)
    return combined_reader([(reader, ""), (projection, "text_projection.")]), keys | {"text_projection.weight"}, prefix
