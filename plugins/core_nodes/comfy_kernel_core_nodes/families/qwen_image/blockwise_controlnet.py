"""DiffSynth's blockwise ControlNet for Qwen-Image (a ``model_patches`` file).

The control image's latent is cut into the transformer's 2x2 patches and
embedded once (``img_in``); after transformer block i, control block i adds
``output_proj(gelu(input_proj(rms(img) + rms(control))))`` to the image
tokens. The inpaint variant feeds one extra latent channel (the keep-mask)
through ``img_in``. Names follow the released files (``img_in``,
``controlnet_blocks.N.{x_rms,y_rms,input_proj,output_proj}``); width and
block count are read from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from ...model.latent_formats import Wan21

#: The key that marks such a file.
MARKER = "controlnet_blocks.0.y_rms.weight"
#: Latent channels x the 2x2 patch: what ``img_in`` takes besides the extra (mask) channels.
BASE_IN = 64


@dataclass(frozen=True)
class BlockwiseConfig:
    num_layers: int
    dim: int
    additional_in_dim: int = 0


def config_from_keys(shapes: dict[str, tuple[int, ...]]) -> BlockwiseConfig:
    """Block count and width from the file; the input width beyond 64 is the inpaint mask's."""
    layers = 0
    while f"controlnet_blocks.{layers}.y_rms.weight" in shapes:
        layers += 1
    dim, width_in = shapes["img_in.weight"]
    return BlockwiseConfig(layers, dim, width_in - BASE_IN)


class ControlBlock(nn.Module):
    def __init__(self, dim: int, ops: SimpleNamespace) -> None:
        super().__init__()
        self.x_rms = ops.RMSNorm(dim, eps=1e-6)
        self.y_rms = ops.RMSNorm(dim, eps=1e-6)
        self.input_proj = ops.Linear(dim, dim)
        self.output_proj = ops.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.output_proj(F.gelu(self.input_proj(self.x_rms(x) + self.y_rms(y))))


class BlockwiseControlNet(nn.Module):
    def __init__(self, config: BlockwiseConfig, ops: SimpleNamespace) -> None:
        super().__init__()
        self.config = config
        self.additional_in_dim = config.additional_in_dim
        self.img_in = ops.Linear(BASE_IN + config.additional_in_dim, config.dim)
        self.controlnet_blocks = nn.ModuleList(ControlBlock(config.dim, ops) for _ in range(config.num_layers))

    def embed(self, latent: torch.Tensor) -> torch.Tensor:
        """Raw VAE latent [B, 16 (+ mask), (1,) h, w] -> control tokens [B, N, dim] in the transformer's order."""
        if latent.ndim == 5:
            latent = latent[:, :, 0]
        latent = latent.clone()
        latent[:, :16] = Wan21().process_in(latent[:, :16])
        b, c, h, w = latent.shape
        latent = F.pad(latent, (0, w % 2, 0, h % 2), mode="circular")
        hp, wp = latent.shape[-2] // 2, latent.shape[-1] // 2
        tokens = latent.view(b, c, hp, 2, wp, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, hp * wp, c * 4)
        return self.img_in(tokens.to(self.img_in.weight.device))

    def control_block(self, img: torch.Tensor, control: torch.Tensor, index: int) -> torch.Tensor:
        return self.controlnet_blocks[index](img, control)
