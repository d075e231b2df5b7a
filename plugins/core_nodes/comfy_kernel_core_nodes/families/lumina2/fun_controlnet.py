"""Z-Image's "fun" union ControlNet (Alibaba PAI's Z-Image-Turbo-Fun-Controlnet-Union, a ``model_patches`` file).

The control latent (the Flux VAE's, normalised; newer files add a mask
channel and an inpaint latent) is cut into 2x2 patches and embedded
(``control_all_x_embedder.2-1``). Control blocks are Z-Image blocks with a
projection in (``before_proj``, first block only: adds the transformer's
image tokens) and out (``after_proj``: the residual added to the image
tokens). The first release runs the embedded control through two plain
refiner blocks and adds its residuals every 30 / n main blocks; the 2.x
releases refine it alongside the noise refiner (``control_noise_refiner``
blocks with their own residuals) instead. Sizes and the variant are read
from the keys; the released files' split q/k/v are joined on read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .nextdit import Z_IMAGE, Block, NextDiTConfig

MARKER = "control_all_x_embedder.2-1.weight"
#: Z-Image's main blocks: the control layers are spread over them evenly.
MAIN_LAYERS = 30
CONTROL_IN = 16


@dataclass(frozen=True)
class FunControlConfig:
    block: NextDiTConfig
    n_control_layers: int
    additional_in_dim: int
    refiner_control: bool
    n_refiner_layers: int = 2


def config_from_keys(shapes: dict[str, tuple[int, ...]]) -> FunControlConfig:
    """The variant and sizes (names as in the file, before :func:`convert`)."""
    dim, width_in = shapes[MARKER]
    layers = 0
    while f"control_layers.{layers}.after_proj.weight" in shapes:
        layers += 1
    refiners = 0
    while f"control_noise_refiner.{refiners}.attention_norm1.weight" in shapes:
        refiners += 1
    head_dim = shapes["control_layers.0.attention.norm_q.weight"][0]
    block = replace(Z_IMAGE, dim=dim, n_heads=dim // head_dim, n_kv_heads=dim // head_dim,
                    ffn_hidden=shapes["control_layers.0.feed_forward.w1.weight"][0], n_layers=0,
                    n_refiner_layers=refiners, axes_dims=(head_dim, 0, 0))
    if block.adaln_dim != shapes["control_layers.0.adaLN_modulation.0.weight"][1]:
        raise ValueError("Z-Image fun ControlNet: unexpected modulation width")
    return FunControlConfig(block, layers, width_in // 4 - CONTROL_IN,
                            "control_noise_refiner.0.after_proj.weight" in shapes, refiners)


_RENAMES = ((".attention.to_out.0.", ".attention.out."), (".attention.norm_q.", ".attention.q_norm."),
            (".attention.norm_k.", ".attention.k_norm."))


def network_name(key: str) -> str | None:
    """The network's name of a released key (``to_q`` stands for the joined ``qkv``; ``to_k``/``to_v`` -> None)."""
    if key.endswith(".attention.to_q.weight"):
        return key[: -len("to_q.weight")] + "qkv.weight"
    if key.endswith((".attention.to_k.weight", ".attention.to_v.weight")):
        return None
    for theirs, ours in _RENAMES:
        key = key.replace(theirs, ours)
    return key


def convert(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released names -> the network's: q, k, v joined into ``qkv``; ``to_out.0`` -> ``out``;
    ``norm_q``/``norm_k`` -> ``q_norm``/``k_norm``."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        name = network_name(key)
        if name is None:
            continue
        if key.endswith(".attention.to_q.weight"):
            stem = key[: -len("to_q.weight")]
            tensor = torch.cat([tensor, sd[stem + "to_k.weight"], sd[stem + "to_v.weight"]])
        out[name] = tensor
    return out


class ControlBlock(Block):
    """A Z-Image block that returns (``after_proj`` residual, carried state)."""

    def __init__(self, c: NextDiTConfig, ops: Any, first: bool) -> None:
        super().__init__(c, ops)
        self.first = first
        if first:
            self.before_proj = ops.Linear(c.dim, c.dim)
        self.after_proj = ops.Linear(c.dim, c.dim)

    def run(self, control: torch.Tensor, img: torch.Tensor, rope: torch.Tensor, vec: torch.Tensor,
            options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:
            control = self.before_proj(control) + img
        control = super().forward(control, None, rope[:, : control.shape[1]], vec, options)
        return self.after_proj(control), control


class FunControlNet(nn.Module):
    def __init__(self, config: FunControlConfig, ops: Any) -> None:
        super().__init__()
        self.config = c = config
        self.n_control_layers = c.n_control_layers
        self.additional_in_dim = c.additional_in_dim
        self.broken = False
        self.control_layers = nn.ModuleList(ControlBlock(c.block, ops, i == 0) for i in range(c.n_control_layers))
        self.control_all_x_embedder = nn.ModuleDict(
            {"2-1": ops.Linear(4 * (CONTROL_IN + c.additional_in_dim), c.block.dim)})
        if c.refiner_control:
            self.control_noise_refiner = nn.ModuleList(ControlBlock(c.block, ops, i == 0)
                                                       for i in range(c.n_refiner_layers))
        else:
            self.control_noise_refiner = nn.ModuleList(Block(c.block, ops) for _ in range(c.n_refiner_layers))

    def check_broken(self) -> None:
        """The 15-layer 2.x file shipped all-zero refiner residuals (``after_proj``); its control layers stand in."""
        if self.config.refiner_control and self.n_control_layers >= 15:
            self.broken = not bool(self.control_noise_refiner[0].after_proj.weight.any())

    def embed(self, latent: torch.Tensor, rope: torch.Tensor, vec: torch.Tensor,
              options: dict[str, Any]) -> torch.Tensor:
        """Control latent [B, C, h, w] (normalised) -> control tokens; the first release refines them here."""
        b, ch, h, w = latent.shape
        tokens = latent.view(b, ch, h // 2, 2, w // 2, 2).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, 4 * ch)
        control = self.control_all_x_embedder["2-1"](tokens.to(self.control_all_x_embedder["2-1"].weight.device))
        if not self.config.refiner_control:
            for block in self.control_noise_refiner:
                control = block(control, None, rope[:, : control.shape[1]], vec, options)
        return control

    def refiner_step(self, index: int, control: torch.Tensor, img: torch.Tensor, rope: torch.Tensor,
                     vec: torch.Tensor, options: dict[str, Any]) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Beside noise-refiner block ``index``: (residual or None, carried control)."""
        if not self.config.refiner_control:
            return None, control
        if self.broken:
            if index == 0:
                return self.control_layers[0].run(control, img, rope, vec, options)
            first = None
            for block in self.control_layers[1:]:
                residual, control = block.run(control, img, rope, vec, options)
                first = residual if first is None else first
            return first, control
        return self.control_noise_refiner[index].run(control, img, rope, vec, options)

    def control_step(self, index: int, control: torch.Tensor, img: torch.Tensor, rope: torch.Tensor,
                     vec: torch.Tensor, options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.control_layers[index].run(control, img, rope, vec, options)
