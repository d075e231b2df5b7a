"""GLIGEN: boxes with text phrases, injected into the UNet's transformer blocks by gated self-attention.

A position network turns each box (Fourier features of its corners) and its
phrase's pooled CLIP embedding into a grounding token; at every transformer
block of the UNet, a gated self-attention over the image tokens plus the
grounding tokens adds its result, scaled by learned gates (``tanh(alpha)``).
The UNet calls it as its ``middle_patch`` (the guider inserts it for
conditioning entries that carry ``gligen``), and ``transformer_index`` picks the
fuser of the block being run.

Module names: ``module_list.N.*`` for the N-th fuser (the files name them by
their UNet block, ``input_blocks.1.1.transformer_blocks.0.fuser.*``) and
``position_net.*``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..families.sd.unet import CrossAttention, FeedForward
from ..model import ops as _ops

_OPS = _ops.manual_cast
MAX_OBJS = 30


class GatedSelfAttentionDense(nn.Module):
    def __init__(self, query_dim: int, context_dim: int, n_heads: int) -> None:
        super().__init__()
        self.linear = _OPS.Linear(context_dim, query_dim)
        self.attn = CrossAttention(query_dim, n_heads, query_dim, ops=_OPS)
        self.ff = FeedForward(query_dim, ops=_OPS)
        self.norm1 = _OPS.LayerNorm(query_dim)
        self.norm2 = _OPS.LayerNorm(query_dim)
        self.alpha_attn = nn.Parameter(torch.tensor(0.0))
        self.alpha_dense = nn.Parameter(torch.tensor(0.0))
        self.scale = 1

    def forward(self, x: torch.Tensor, objs: torch.Tensor) -> torch.Tensor:
        n_visual = x.shape[1]
        objs = self.linear(objs)
        gate_attn = torch.tanh(self.alpha_attn.to(device=x.device, dtype=x.dtype))
        gate_dense = torch.tanh(self.alpha_dense.to(device=x.device, dtype=x.dtype))
        x = x + self.scale * gate_attn * self.attn(self.norm1(torch.cat([x, objs], dim=1)))[:, :n_visual, :]
        return x + self.scale * gate_dense * self.ff(self.norm2(x))


def fourier_embedding(x: torch.Tensor, num_freqs: int = 8, temperature: float = 100.0) -> torch.Tensor:
    """sin/cos of ``x`` at ``num_freqs`` geometric frequencies, interleaved per frequency, on the last axis."""
    bands = temperature ** (torch.arange(num_freqs) / num_freqs)
    out = []
    for freq in bands:
        out.append(torch.sin(freq * x))
        out.append(torch.cos(freq * x))
    return torch.cat(out, -1)


class PositionNet(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, fourier_freqs: int = 8) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.fourier_freqs = fourier_freqs
        self.position_dim = fourier_freqs * 2 * 4
        self.linears = nn.Sequential(_OPS.Linear(in_dim + self.position_dim, 512), nn.SiLU(), _OPS.Linear(512, 512),
                                     nn.SiLU(), _OPS.Linear(512, out_dim))
        self.null_positive_feature = nn.Parameter(torch.zeros([in_dim]))
        self.null_position_feature = nn.Parameter(torch.zeros([self.position_dim]))

    def forward(self, boxes: torch.Tensor, masks: torch.Tensor, positive_embeddings: torch.Tensor) -> torch.Tensor:
        masks = masks.unsqueeze(-1)
        xyxy = fourier_embedding(boxes, self.fourier_freqs)
        positive_null = self.null_positive_feature.to(device=boxes.device, dtype=boxes.dtype).view(1, 1, -1)
        xyxy_null = self.null_position_feature.to(device=boxes.device, dtype=boxes.dtype).view(1, 1, -1)
        positive_embeddings = positive_embeddings * masks + (1 - masks) * positive_null
        xyxy = xyxy * masks + (1 - masks) * xyxy_null
        return self.linears(torch.cat([positive_embeddings, xyxy], dim=-1))


class Gligen(nn.Module):
    def __init__(self, fusers: list[tuple[int, int, int]], in_dim: int, out_dim: int) -> None:
        """``fusers``: (query_dim, key_dim, heads) of each transformer block's fuser, in UNet order."""
        super().__init__()
        self.module_list = nn.ModuleList(GatedSelfAttentionDense(q, k, h) for q, k, h in fusers)
        self.position_net = PositionNet(in_dim, out_dim)
        self.key_dim = fusers[0][1] if fusers else 768
        self.max_objs = MAX_OBJS

    def _set_position(self, boxes: torch.Tensor, masks: torch.Tensor,
                      positive_embeddings: torch.Tensor) -> Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]:
        objs = self.position_net(boxes, masks, positive_embeddings)

        def patch(x: torch.Tensor, extra_options: dict[str, Any]) -> torch.Tensor:
            module = self.module_list[extra_options["transformer_index"]]
            return module(x, objs.to(device=x.device, dtype=x.dtype))

        return patch

    def set_position(self, latent_image_shape: Any, position_params: list, device: Any) -> Callable:
        """The middle patch for boxes ``(pooled, height, width, y, x)`` in latent units."""
        batch, _, h, w = latent_image_shape
        masks = torch.zeros([self.max_objs], device="cpu")
        boxes, embeddings = [], []
        for p in position_params:
            x1, y1 = p[4] / w, p[3] / h
            x2, y2 = (p[4] + p[2]) / w, (p[3] + p[1]) / h
            masks[len(boxes)] = 1.0
            boxes.append(torch.tensor((x1, y1, x2, y2)).unsqueeze(0))
            embeddings.append(p[0])
        if len(boxes) < self.max_objs:
            boxes.append(torch.zeros([self.max_objs - len(boxes), 4]))
            embeddings.append(torch.zeros([self.max_objs - len(embeddings), self.key_dim]))
        box_out = torch.cat(boxes).unsqueeze(0).repeat(batch, 1, 1)
        conds = torch.cat(embeddings).unsqueeze(0).repeat(batch, 1, 1)
        return self._set_position(box_out.to(device), masks.unsqueeze(0).repeat(batch, 1).to(device),
                                  conds.to(device))

    def set_empty(self, latent_image_shape: Any, device: Any) -> Callable:
        batch = latent_image_shape[0]
        masks = torch.zeros([self.max_objs]).repeat(batch, 1)
        box_out = torch.zeros([self.max_objs, 4]).repeat(batch, 1, 1)
        conds = torch.zeros([self.max_objs, self.key_dim]).repeat(batch, 1, 1)
        return self._set_position(box_out.to(device), masks.to(device), conds.to(device))


BLOCKS = ("input_blocks", "middle_block", "output_blocks")


def fuser_groups(keys: list[str]) -> list[tuple[str, list[str]]]:
    """The fuser keys of each UNet block (``input_blocks.1.`` ...), in ComfyUI's order (blocks, then 0..19)."""
    groups = []
    for block in BLOCKS:
        for index in range(20):
            tag = f"{block}.{index}."
            found = [k for k in keys if tag in k and ".fuser." in k]
            if found:
                groups.append((tag, found))
    return groups


def layout(shapes: dict[str, tuple[int, ...]]) -> tuple[list[tuple[int, int, int]], int, int, dict[str, str]] | None:
    """(fusers, in_dim, out_dim, file key -> module key) of a GLIGEN file, or None if it is not one."""
    if "position_net.null_positive_feature" not in shapes:
        return None
    fusers, names = [], {}
    for n, (_, keys) in enumerate(fuser_groups(list(shapes))):
        local = {k.split(".fuser.")[-1]: k for k in keys}
        query_dim, key_dim = shapes[local["linear.weight"]]
        heads = 8 if key_dim == 768 else query_dim // 64
        fusers.append((query_dim, key_dim, heads))
        for short, key in local.items():
            names[key] = f"module_list.{n}.{short}"
    for key in shapes:
        if key.startswith("position_net."):
            names[key] = key
    in_dim = shapes["position_net.null_positive_feature"][0]
    out_dim = shapes["position_net.linears.4.weight"][0]
    return fusers, in_dim, out_dim, names
