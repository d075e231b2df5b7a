"""Chroma: Flux.1 schnell's blocks without per-block modulation layers, modulated by one small "approximator".

The approximator maps (time step, guidance, modulation index) embeddings to
one vector per modulation slot: 3 per single block, 6 + 6 per double block
(image, text), 2 for the final layer (344 for the full 19 + 38 block model).
There is no CLIP pooled vector; the text is T5-XXL alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...model import ops as _ops
from .layers import (
    DoubleStreamBlock,
    LastLayer,
    MLPEmbedder,
    ModulationOut,
    RMSNorm,
    SingleStreamBlock,
    timestep_embedding,
)
from .model import Flux, FluxParams


class Approximator(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, n_layers: int, ops: Any) -> None:
        super().__init__()
        self.in_proj = ops.Linear(in_dim, hidden_dim)
        self.layers = nn.ModuleList(MLPEmbedder(hidden_dim, hidden_dim, ops) for _ in range(n_layers))
        self.norms = nn.ModuleList(RMSNorm(hidden_dim) for _ in range(n_layers))
        self.out_proj = ops.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_proj(x)
        for layer, norm in zip(self.layers, self.norms, strict=True):
            x = x + layer(norm(x))
        return self.out_proj(x)


def _slot(mods: torch.Tensor, offset: int) -> ModulationOut:
    return ModulationOut(mods[:, offset:offset + 1], mods[:, offset + 1:offset + 2], mods[:, offset + 2:offset + 3])


class Chroma(Flux):
    def __init__(self, params: FluxParams, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        nn.Module.__init__(self)
        self.params = p = params
        self.patch_size = p.patch_size
        self.compute_dtype = compute_dtype
        self.in_channels, self.out_channels = p.in_channels, p.out_channels
        self.hidden_size, self.num_heads = p.hidden_size, p.num_heads
        extra = p.extra
        self.img_in = ops.Linear(p.in_channels, p.hidden_size)
        self.txt_in = ops.Linear(p.context_in_dim, p.hidden_size)
        self.distilled_guidance_layer = Approximator(extra["in_dim"], extra["out_dim"], extra["hidden_dim"],
                                                     extra["n_layers"], ops)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio, p.qkv_bias, ops, modulation=False)
            for _ in range(p.depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio, ops,
                                                             modulation=False)
                                           for _ in range(p.depth_single_blocks))
        self.final_layer = LastLayer(p.hidden_size, p.out_channels, ops, modulation=False)

    @property
    def modulation_slots(self) -> int:
        return 3 * self.params.depth_single_blocks + 12 * self.params.depth + 2

    def embed_vector(self, timesteps: torch.Tensor, y: torch.Tensor | None, guidance: torch.Tensor | None,
                     dtype: torch.dtype, batch: int, device: Any) -> torch.Tensor:
        """Every modulation vector [B, slots, hidden] from the time step and the guidance value."""
        slots = self.modulation_slots
        guidance = torch.zeros_like(timesteps) if guidance is None else guidance
        t = timestep_embedding(timesteps.detach().to(device), 16).to(device, dtype)
        g = timestep_embedding(guidance.detach().to(device), 16).to(device, dtype)
        index = timestep_embedding(torch.arange(slots, device=device), 32).to(device, dtype)
        index = index.unsqueeze(0).repeat(t.shape[0], 1, 1)
        tg = torch.cat([t, g], dim=1).unsqueeze(1).repeat(1, slots, 1)
        return self.distilled_guidance_layer(torch.cat([tg, index], dim=-1))

    def _double(self, block: nn.Module, i: int, img: torch.Tensor, txt: torch.Tensor, vec: Any, pe: Any,
                attn_mask: Any, options: dict[str, Any], replace: dict) -> tuple[torch.Tensor, torch.Tensor]:
        base = 3 * self.params.depth_single_blocks + 6 * i
        txt_base = base + 6 * self.params.depth
        mods = ((_slot(vec, base), _slot(vec, base + 3)), (_slot(vec, txt_base), _slot(vec, txt_base + 3)))
        return Flux._double(block, i, img, txt, mods, pe, attn_mask, options, replace)

    def _single(self, block: nn.Module, i: int, img: torch.Tensor, vec: Any, pe: Any, attn_mask: Any,
                options: dict[str, Any], replace: dict) -> torch.Tensor:
        return Flux._single(block, i, img, _slot(vec, 3 * i), pe, attn_mask, options, replace)

    def final_vector(self, vec: Any) -> Any:
        return vec[:, -2:-1], vec[:, -1:]
