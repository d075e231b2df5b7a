"""SD3 ControlNets: Stability's SD3.5 ones (blur, canny, depth for SD3.5 Large), a stack of image-only MMDiT
blocks, and diffusers' SD3ControlNetModel files (:class:`MMDiTControlNet`, joint blocks).

The file holds ``transformer_blocks.N`` (the x half of a joint block, attending
over the image tokens alone), one ``controlnet_blocks.N`` linear per block, the
hint's patch embedder ``pos_embed_input`` and the time / pooled-text embedders
(diffusers' ``time_text_embed`` names or ComfyUI's ``t_embedder`` /
``y_embedder``). The latent's patch embedder is the sampled MMDiT's own: it is
borrowed when sampling starts (``embedder``), so the file need not carry it
(ComfyUI copies it in the same way).
Positions are a fixed 2-D sin/cos table, not the MMDiT's learned one. Each
block's projected output is repeated so the residuals cover all the MMDiT's
joint blocks (``{"output": [...]}``, added to the image tokens after block i).
A file whose pooled embedder is hidden x hidden (``double_y_emb``) embeds the
pooled vector with the MMDiT's ``y_embedder`` first and feeds every block the
same tokens; the other kind chains the blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops
from ...model.attention import optimized_attention
from .mmdit import (
    HEAD_DIM,
    Embedder,
    HalfBlock,
    JointBlock,
    MMDiT,
    MMDiTParams,
    PatchEmbed,
    timestep_embedding,
)

#: diffusers' names of the embedders -> the MMDiT's.
DIFFUSERS_NAMES = {
    "time_text_embed.timestep_embedder.linear_1.": "t_embedder.mlp.0.",
    "time_text_embed.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
    "time_text_embed.text_embedder.linear_1.": "y_embedder.mlp.0.",
    "time_text_embed.text_embedder.linear_2.": "y_embedder.mlp.2.",
    "pos_embed.proj.": "x_embedder.proj.",
    "context_embedder.": "context_embedder.",
}


def rename_key(key: str) -> str:
    """A file key in the network's names (diffusers' embedder names mapped, the rest as stored)."""
    for old, new in DIFFUSERS_NAMES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


@dataclass(frozen=True)
class SD35ControlParams:
    blocks: int
    main_depth: int
    double_y_emb: bool
    adm_in_channels: int = 2048
    in_channels: int = 16
    patch_size: int = 2

    @property
    def hidden_size(self) -> int:
        return HEAD_DIM * self.main_depth


def sd35_control_params(shapes: dict[str, tuple[int, ...]]) -> SD35ControlParams:
    """The layout of a Stability SD3.5 ControlNet file (keys as stored or renamed)."""
    shapes = {rename_key(k): v for k, v in shapes.items()}
    y = shapes["y_embedder.mlp.0.weight"]
    blocks = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("transformer_blocks."))
    return SD35ControlParams(blocks=blocks, main_depth=y[0] // HEAD_DIM, double_y_emb=y[0] == y[1],
                             in_channels=shapes["pos_embed_input.proj.weight"][1],
                             patch_size=shapes["pos_embed_input.proj.weight"][-1])


def sincos_positions(dim: int, h: int, w: int, device: Any, center: float = 7.5,
                     magnitude: float = 7.5) -> torch.Tensor:
    """[h*w, dim]: sin/cos of a grid spread around ``center``, the shorter side spanning +-``magnitude``."""
    small = min(h, w)
    rows = torch.linspace(center - magnitude * h / small, center + magnitude * h / small, h, device=device)
    cols = torch.linspace(center - magnitude * w / small, center + magnitude * w / small, w, device=device)
    grid_h, grid_w = torch.meshgrid(rows, cols, indexing="ij")
    half = dim // 2
    freqs = 1.0 / 10000 ** (torch.arange(half // 2, device=device, dtype=torch.float32) / (half / 2.0))

    def embed(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([embed(grid_w), embed(grid_h)], dim=1)


class SD35ControlNet(nn.Module):
    def __init__(self, p: SD35ControlParams, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.params = p
        self.compute_dtype = compute_dtype
        hidden = p.hidden_size
        block_params = MMDiTParams(in_channels=p.in_channels, patch_size=p.patch_size, depth=p.main_depth)
        self.t_embedder = Embedder(256, hidden, ops)
        self.y_embedder = Embedder(hidden if p.double_y_emb else p.adm_in_channels, hidden, ops)
        self.transformer_blocks = nn.ModuleList(HalfBlock(block_params, ops=ops) for _ in range(p.blocks))
        self.controlnet_blocks = nn.ModuleList(ops.Linear(hidden, hidden) for _ in range(p.blocks))
        self.pos_embed_input = PatchEmbed(p.patch_size, p.in_channels, hidden, ops)
        if p.double_y_emb:  # these files carry their own latent embedder and borrow the pooled one
            self.x_embedder = PatchEmbed(p.patch_size, p.in_channels, hidden, ops)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.pos_embed_input.proj.weight.dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, hint: torch.Tensor, y: torch.Tensor | None = None,
                embedder: dict[str, torch.Tensor] | None = None, **kwargs: Any) -> dict[str, list]:
        """Residuals for the MMDiT's joint blocks; ``embedder`` holds the sampled MMDiT's borrowed weights."""
        if embedder is None:
            raise ValueError("an SD3.5 ControlNet runs only while sampling an SD3 model (it borrows its embedders)")
        p, dtype = self.params, self.dtype
        h, w = x.shape[-2:]
        x = x.to(dtype)
        if p.double_y_emb:
            tokens = self.x_embedder(x)
        else:
            weight, bias = (embedder[k].to(device=x.device, dtype=dtype) for k in ("x.weight", "x.bias"))
            pad_h, pad_w = (-h) % p.patch_size, (-w) % p.patch_size
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
            tokens = F.conv2d(x, weight, bias, stride=p.patch_size).flatten(2).transpose(1, 2)
            hp, wp = (h + 1) // p.patch_size, (w + 1) // p.patch_size
            tokens = tokens + sincos_positions(p.hidden_size, hp, wp, x.device).to(dtype)
        c = self.t_embedder(timestep_embedding(timesteps.to(x.device)).to(dtype))
        if y is not None:
            y = y.to(device=x.device, dtype=dtype)
            if p.double_y_emb:
                y = _mlp(y, embedder, "y")
            c = c + self.y_embedder(y)
        tokens = tokens + self.pos_embed_input(hint.to(device=x.device, dtype=dtype))
        repeat = math.ceil(p.main_depth / p.blocks)
        out: list[torch.Tensor] = []
        for block, project in zip(self.transformer_blocks, self.controlnet_blocks, strict=True):
            qkv, _, rest = block.pre_attention(tokens, c)
            result = block.post_attention(optimized_attention(*qkv, block.attn.heads), None, *rest)
            if not p.double_y_emb:
                tokens = result
            out += [project(result)] * repeat
        return {"output": out}


def _mlp(y: torch.Tensor, weights: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The sampled MMDiT's Linear -> SiLU -> Linear embedder ``name`` on ``y``."""
    def get(key: str) -> torch.Tensor:
        return weights[f"{name}.{key}"].to(device=y.device, dtype=y.dtype)

    return F.linear(F.silu(F.linear(y, get("0.weight"), get("0.bias"))), get("2.weight"), get("2.bias"))


def borrowed_embedders(mmdit: nn.Module, double_y_emb: bool) -> dict[str, torch.Tensor]:
    """What the ControlNet borrows from the sampled MMDiT, as float32 tensors (dequantised): the latent
    patch embedder, or the pooled-vector embedder for ``double_y_emb`` files."""
    def weight(module: nn.Module, name: str) -> torch.Tensor:
        return _ops.cast_weight(module, name, torch.empty(0, device=getattr(module, name).device))

    if not double_y_emb:
        proj = mmdit.x_embedder.proj
        return {"x.weight": weight(proj, "weight"), "x.bias": weight(proj, "bias")}
    out = {}
    for i in (0, 2):
        layer = mmdit.y_embedder.mlp[i]
        out[f"y.{i}.weight"], out[f"y.{i}.bias"] = weight(layer, "weight"), weight(layer, "bias")
    return out


class MMDiTControlNet(MMDiT):
    """diffusers' SD3ControlNetModel (SD3 Medium ControlNets saved by diffusers) under the MMDiT's names.

    The MMDiT's embedders and position table, ``blocks`` full joint blocks (no
    pre-only text half, no output layer), ``pos_embed_input`` for the hint
    latent and a ``controlnet_blocks.N`` linear per block. The pooled vector
    is zeroed (as ComfyUI runs these files); block i's residual is repeated
    ``depth // blocks`` times (once fewer for the last block).
    """

    def __init__(self, params: MMDiTParams, blocks: int, hint_channels: int, ops: Any = _ops.plain,
                 compute_dtype: torch.dtype | None = None) -> None:
        super().__init__(params, ops, compute_dtype)
        del self.final_layer
        hidden = params.hidden_size
        self.joint_blocks = nn.ModuleList(JointBlock(params, i, ops, pre_only=False) for i in range(blocks))
        self.controlnet_blocks = nn.ModuleList(ops.Linear(hidden, hidden) for _ in range(blocks))
        self.pos_embed_input = PatchEmbed(params.patch_size, hint_channels, hidden, ops)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, hint: torch.Tensor, context: torch.Tensor,
                y: torch.Tensor | None = None, **kwargs: Any) -> dict[str, list]:
        p, dtype, device = self.params, self.dtype, x.device
        h, w = x.shape[-2:]
        tokens = self.x_embedder(x.to(dtype))
        tokens = tokens + self.cropped_pos_embed((h + 1) // p.patch_size, (w + 1) // p.patch_size, tokens)
        tokens = tokens + self.pos_embed_input(hint.to(device=device, dtype=dtype))
        c = self.t_embedder(timestep_embedding(timesteps.to(device)).to(dtype))
        if hasattr(self, "y_embedder"):
            c = c + self.y_embedder(torch.zeros(x.shape[0], p.adm_in_channels, device=device, dtype=dtype))
        txt = self.context_embedder(context.to(device=device, dtype=dtype))
        blocks = len(self.joint_blocks)
        out: list[torch.Tensor] = []
        for i, (block, project) in enumerate(zip(self.joint_blocks, self.controlnet_blocks, strict=True)):
            txt, tokens = block(txt, tokens, c)
            count = p.depth // blocks - (1 if i == blocks - 1 else 0)
            out += [project(tokens)] * count
        return {"output": out}


def diffusers_controlnet_converter(depth: int) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """diffusers' SD3 ControlNet tensors -> MMDiTControlNet's: q/k/v joined into ``qkv``; the last text
    modulation is swapped only where block ``depth - 1`` exists (ComfyUI maps these files with the main
    model's depth)."""
    from .lora import diffusers_names

    names = diffusers_names({"depth": depth}, prefix="")

    def convert(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        parts: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for key, tensor in sd.items():
            if key.startswith(("controlnet_blocks.", "pos_embed_input.")):
                out[key] = tensor
                continue
            if key == "pos_embed.pos_embed":
                out["pos_embed"] = tensor
                continue
            layer, end = key.rsplit(".", 1)
            target = names.get(layer)
            if target is None:
                continue
            if isinstance(target, str):
                out[target[:-len("weight")] + end] = tensor
            elif target[1] is not None:
                parts.setdefault(target[0][:-len("weight")] + end, []).append((target[1][1], tensor))
            else:
                out[target[0][:-len("weight")] + end] = target[2](tensor)
        for key, pieces in parts.items():
            out[key] = torch.cat([t for _, t in sorted(pieces, key=lambda item: item[0])])
        return out

    return convert
