"""The Flux.2 transformer (dev and klein): Flux.1's double/single stream layout with shared modulation.

Differences from Flux.1: the latent has 128 channels at 1/16 of the image
(the VAE's 32 channels at 1/8, in 2x2 patches), so a token is one latent
pixel; no layer has a bias; the MLPs are SwiGLU; three modulation layers
(``double_stream_modulation_img``/``_txt``, ``single_stream_modulation``)
are shared by every block instead of one per block; there is no pooled text
vector (the context is the LLM's stacked hidden states); positions have four
axes (index, row, column, text position) of 32 channels each, theta 2000.
Reference images (edits) are more image tokens at index 10, 20, ... .

The patch points are Flux.1's (see model.py); the replaced blocks receive
the shared modulations as ``vec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...model import ops as _ops
from .layers import (
    DoubleStreamBlock,
    LastLayer,
    MLPEmbedder,
    Modulation,
    SingleStreamBlock,
    timestep_embedding,
)
from .model import Flux, FluxParams, patchify, unpatchify

REFERENCE_INDEX_STEP = 10


@dataclass
class Flux2Vector:
    """The time (and guidance) vector and the modulations every block shares."""

    vec: torch.Tensor
    double: tuple
    single: Any


class Flux2(Flux):
    def __init__(self, params: FluxParams, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        nn.Module.__init__(self)
        self.params = p = params
        self.patch_size = 1
        self.compute_dtype = compute_dtype
        self.in_channels, self.out_channels = p.in_channels, p.out_channels
        self.hidden_size, self.num_heads = p.hidden_size, p.num_heads
        self.img_in = ops.Linear(p.in_channels, p.hidden_size, bias=False)
        self.time_in = MLPEmbedder(256, p.hidden_size, ops, bias=False)
        if p.guidance_embed:
            self.guidance_in = MLPEmbedder(256, p.hidden_size, ops, bias=False)
        self.txt_in = ops.Linear(p.context_in_dim, p.hidden_size, bias=False)
        self.double_stream_modulation_img = Modulation(p.hidden_size, True, ops, bias=False)
        self.double_stream_modulation_txt = Modulation(p.hidden_size, True, ops, bias=False)
        self.single_stream_modulation = Modulation(p.hidden_size, False, ops, bias=False)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio, False, ops, modulation=False, gated_mlp=True,
                              bias=False) for _ in range(p.depth))
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio, ops, modulation=False, gated_mlp=True,
                              bias=False) for _ in range(p.depth_single_blocks))
        self.final_layer = LastLayer(p.hidden_size, p.out_channels, ops, bias=False)

    def embed_vector(self, timesteps: torch.Tensor, y: torch.Tensor | None, guidance: torch.Tensor | None,
                     dtype: torch.dtype, batch: int, device: Any) -> Flux2Vector:
        vec = self.time_in(timestep_embedding(timesteps.to(device), 256).to(dtype))
        if self.params.guidance_embed and guidance is not None:
            vec = vec + self.guidance_in(timestep_embedding(guidance.to(device), 256).to(dtype))
        double = (self.double_stream_modulation_img(vec), self.double_stream_modulation_txt(vec))
        return Flux2Vector(vec, double, self.single_stream_modulation(vec)[0])

    def _double(self, block: nn.Module, i: int, img: torch.Tensor, txt: torch.Tensor, vec: Any, pe: Any,
                attn_mask: Any, options: dict[str, Any], replace: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return Flux._double(block, i, img, txt, vec.double, pe, attn_mask, options, replace)

    def _single(self, block: nn.Module, i: int, img: torch.Tensor, vec: Any, pe: Any, attn_mask: Any,
                options: dict[str, Any], replace: dict) -> torch.Tensor:
        return Flux._single(block, i, img, vec.single, pe, attn_mask, options, replace)

    def final_vector(self, vec: Any) -> Any:
        return vec.vec

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None,
                 guidance: torch.Tensor | None = None, ref_latents: list[torch.Tensor] | None = None,
                 control: dict[str, list] | None = None, transformer_options: dict[str, Any] | None = None,
                 **kwargs: Any) -> torch.Tensor:
        dtype, device = self.dtype, x.device
        bs, _, h, w = x.shape
        img, img_ids = _tokens(x.to(dtype), 0)
        img_tokens = img.shape[1]
        for i, ref in enumerate(ref_latents or ()):
            tokens, ids = _tokens(ref.to(device=device, dtype=dtype), REFERENCE_INDEX_STEP * (i + 1))
            img, img_ids = torch.cat([img, tokens], dim=1), torch.cat([img_ids, ids], dim=1)
        context = context.to(device=device, dtype=dtype)
        txt_ids = torch.zeros((bs, context.shape[1], 4), device=device, dtype=dtype)
        txt_ids[..., 3] = torch.arange(context.shape[1], device=device, dtype=dtype)
        out = self.forward_orig(img, img_ids, context, txt_ids, timestep.to(device), None, guidance, control,
                                transformer_options, attn_mask=kwargs.get("attention_mask"))
        return unpatchify(out[:, :img_tokens], h, w, 1).float()


def _tokens(latent: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per latent pixel, ids (index, row, column, 0)."""
    tokens, ids = patchify(latent, 1, index)
    return tokens, torch.cat([ids, torch.zeros_like(ids[..., :1])], dim=-1)
