"""InstantX's Qwen-Image ControlNets (the Union one and the inpainting one): a few Qwen-Image blocks.

The file is a Qwen-Image transformer in diffusers' names without the output
layers (``img_in``, ``txt_norm``, ``txt_in``, ``time_text_embed``,
``transformer_blocks.N``) plus ``controlnet_x_embedder`` (the patchified hint
latent, 64 channels, or 68 with the inpainting mask) and one
``controlnet_blocks.N`` linear per block. Its blocks run on the same tokens,
rotary positions and time step as the sampled model's; each block's projected
image stream is repeated to cover the 60 blocks of Qwen-Image, where the
transformer adds it to the image tokens (``{"input": [...]}``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...components.rope import rope_angles
from ...model import ops as _ops
from .transformer import QwenImageConfig, QwenImageTransformer

#: how many blocks of the sampled model the residuals cover (Qwen-Image's depth)
MAIN_MODEL_BLOCKS = 60


class QwenImageControlNet(QwenImageTransformer):
    def __init__(self, config: QwenImageConfig, hint_channels: int, ops: Any = _ops.plain,
                 compute_dtype: torch.dtype | None = None) -> None:
        super().__init__(config, ops, compute_dtype)
        del self.norm_out, self.proj_out
        self.controlnet_blocks = nn.ModuleList(ops.Linear(config.inner_dim, config.inner_dim)
                                               for _ in range(config.num_layers))
        self.controlnet_x_embedder = ops.Linear(hint_channels, config.inner_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.img_in.weight.dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, hint: torch.Tensor,
                transformer_options: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, list]:
        """Residuals for the sampled model's blocks from the latent ``x`` [B, 16, (1,) H, W] and the hint latent."""
        options = transformer_options if transformer_options is not None else {}
        dtype, p, shape = self.dtype, self.patch_size, x.shape
        img, img_ids = self.patchify(x)
        hint_tokens, _ = self.patchify(hint.to(x.device))
        txt_start = round(max(((shape[-1] + p // 2) // p) // 2, ((shape[-2] + p // 2) // p) // 2))
        txt_ids = torch.arange(txt_start, txt_start + context.shape[1], device=x.device, dtype=torch.float32)
        txt_ids = txt_ids[None, :, None].expand(shape[0], -1, 3)
        rope = rope_angles(torch.cat([txt_ids, img_ids.to(txt_ids)], dim=1), self.config.axes_dims_rope)
        rope = rope.unsqueeze(2).to(x.device)
        img = self.img_in(img.to(dtype)) + self.controlnet_x_embedder(hint_tokens.to(dtype))
        txt = self.txt_in(self.txt_norm(context.to(device=x.device, dtype=dtype)))
        vec = self.time_text_embed(timesteps.to(x.device), dtype)
        repeat = math.ceil(MAIN_MODEL_BLOCKS / len(self.controlnet_blocks))
        out: list[torch.Tensor] = []
        for block, project in zip(self.transformer_blocks, self.controlnet_blocks, strict=True):
            txt, img = block(img, txt, vec, rope, options)
            out += [project(img)] * repeat
        return {"input": out[:MAIN_MODEL_BLOCKS]}
