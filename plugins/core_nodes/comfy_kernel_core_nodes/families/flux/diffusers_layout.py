"""Flux.1 transformers saved in diffusers' layout, read as the original (BFL) layout the network uses.

Diffusers splits what BFL fuses: q, k and v (and a single block's MLP input)
are separate layers there, concatenated here as the file is read; the final
modulation stores (scale, shift) where BFL stores (shift, scale). Only the
tensor names and those concatenations differ, so detection runs on the
BFL names such a file stands for.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ...model.detection import Shapes

MARKER = "single_transformer_blocks.0.proj_mlp.weight"


def _count(shapes: Shapes, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({int(m.group(1)) for k in shapes if (m := rx.match(k))})


def is_diffusers_flux(shapes: Shapes, prefix: str = "") -> bool:
    return prefix + MARKER in shapes and prefix + "x_embedder.weight" in shapes


def sources(shapes: Shapes, prefix: str = "") -> dict[str, list[str]]:
    """BFL name -> the diffusers names (under ``prefix``) concatenated into it, for every tensor of the file."""
    out: dict[str, list[str]] = {}

    def add(bfl: str, *names: str) -> None:
        for end in ("weight", "bias"):
            found = [f"{prefix}{n}.{end}" for n in names]
            if all(k in shapes for k in found):
                out[f"{bfl}.{end}"] = found

    for i in range(_count(shapes, re.escape(prefix) + r"transformer_blocks\.(\d+)\.")):
        d, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        add(b + "img_attn.qkv", d + "attn.to_q", d + "attn.to_k", d + "attn.to_v")
        add(b + "txt_attn.qkv", d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj")
        for theirs, ours in (("attn.to_out.0", "img_attn.proj"), ("attn.to_add_out", "txt_attn.proj"),
                             ("norm1.linear", "img_mod.lin"), ("norm1_context.linear", "txt_mod.lin"),
                             ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"),
                             ("ff_context.net.0.proj", "txt_mlp.0"), ("ff_context.net.2", "txt_mlp.2")):
            add(b + ours, d + theirs)
        for theirs, ours in (("attn.norm_q", "img_attn.norm.query_norm"), ("attn.norm_k", "img_attn.norm.key_norm"),
                             ("attn.norm_added_q", "txt_attn.norm.query_norm"),
                             ("attn.norm_added_k", "txt_attn.norm.key_norm")):
            out[f"{b}{ours}.scale"] = [f"{prefix}{d}{theirs}.weight"]
    for i in range(_count(shapes, re.escape(prefix) + r"single_transformer_blocks\.(\d+)\.")):
        d, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        add(b + "linear1", d + "attn.to_q", d + "attn.to_k", d + "attn.to_v", d + "proj_mlp")
        add(b + "linear2", d + "proj_out")
        add(b + "modulation.lin", d + "norm.linear")
        out[f"{b}norm.query_norm.scale"] = [f"{prefix}{d}attn.norm_q.weight"]
        out[f"{b}norm.key_norm.scale"] = [f"{prefix}{d}attn.norm_k.weight"]
    for theirs, ours in (("x_embedder", "img_in"), ("context_embedder", "txt_in"),
                         ("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
                         ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
                         ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
                         ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
                         ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
                         ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
                         ("proj_out", "final_layer.linear"), ("norm_out.linear", "final_layer.adaLN_modulation.1")):
        add(ours, theirs)
    return out


def bfl_shapes(shapes: Shapes, prefix: str = "") -> Shapes:
    """The BFL names and shapes a diffusers-layout file stands for (concatenations along the first dim)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, parts in sources(shapes, prefix).items():
        first = tuple(shapes[parts[0]])
        out[name] = (sum(int(shapes[p][0]) for p in parts),) + first[1:]
    return out


def to_bfl(sd: dict[str, torch.Tensor], shapes: Shapes) -> dict[str, torch.Tensor]:
    """A diffusers-layout state dict (keys without the file prefix) in BFL's names."""
    out: dict[str, torch.Tensor] = {}
    for name, parts in sources(shapes).items():
        tensors = [sd[p] for p in parts]
        value = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
        if name.startswith("final_layer.adaLN_modulation.1."):
            scale, shift = value.chunk(2, dim=0)
            value = torch.cat([shift, scale], dim=0)
        out[name] = value
    return out


def detect(shapes: Shapes, prefix: str = "") -> dict[str, Any] | None:
    """Flux.1's ``unet_config`` of a diffusers-layout transformer under ``prefix``, or None."""
    if not is_diffusers_flux(shapes, prefix):
        return None
    from .detect import flux_config

    return flux_config(bfl_shapes(shapes, prefix))
