"""The Flux.1 transformer (dev, schnell, Fill, Kontext): double stream blocks, then single stream blocks.

The latent is cut into 2x2 patches (16 channels -> 64 per token; Fill adds
the masked image and the mask: 384), the text (T5) tokens come first in the
joint sequence, and every token has a 3-axis position (index, row, column)
for the rotary embedding; text tokens sit at 0. Kontext's reference latents
are appended as more image tokens (index 1, or offset rows/columns) and cut
off the output. The time step, the guidance strength (dev) and CLIP-L's
pooled output are summed into the vector that modulates every block.

Patch points, where ComfyUI calls them: ``patches["post_input"]`` after the
input projections; ``patches_replace["dit"][("double_block", i)]`` and
``[("single_block", i)]`` replace a block, called with ComfyUI's argument
dict and ``{"original_block": ...}``; ``patches["double_block"]`` after each
double block; ControlNet residuals from ``control["input"]`` (double blocks)
and ``control["output"]`` (single blocks); the ``diffusion_model`` wrappers.
``transformer_options`` carries ``block_type``, ``block_index`` and
``total_blocks`` while a block runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import extension
from ...model import ops as _ops
from .layers import (
    DoubleStreamBlock,
    LastLayer,
    MLPEmbedder,
    SingleStreamBlock,
    clamp_fp16,
    position_embedding,
    timestep_embedding,
)


@dataclass(frozen=True)
class FluxParams:
    in_channels: int = 64
    out_channels: int = 64
    vec_in_dim: int = 768
    context_in_dim: int = 4096
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    axes_dim: tuple[int, ...] = (16, 56, 56)
    theta: int = 10000
    patch_size: int = 2
    qkv_bias: bool = True
    guidance_embed: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def pad_to_patch(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Circular padding of H and W up to multiples of ``patch`` (ComfyUI's rule)."""
    pad_h, pad_w = (-x.shape[-2]) % patch, (-x.shape[-1]) % patch
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
    return x


def patchify(x: torch.Tensor, patch: int, index: int = 0, h_offset: int = 0,
             w_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [B, h*w, C*p*p] of a latent and their ids [B, h*w, 3] (index, row, column)."""
    b, c, h, w = x.shape
    x = pad_to_patch(x, patch)
    hp, wp = x.shape[-2] // patch, x.shape[-1] // patch
    tokens = x.reshape(b, c, hp, patch, wp, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, hp * wp, c * patch * patch)
    h_len, w_len = (h + patch // 2) // patch, (w + patch // 2) // patch
    h_off, w_off = (h_offset + patch // 2) // patch, (w_offset + patch // 2) // patch
    ids = torch.zeros((h_len, w_len, 3), device=x.device, dtype=x.dtype)
    ids[:, :, 0] = index
    ids[:, :, 1] = torch.linspace(h_off, h_len - 1 + h_off, steps=h_len, device=x.device, dtype=x.dtype)[:, None]
    ids[:, :, 2] = torch.linspace(w_off, w_len - 1 + w_off, steps=w_len, device=x.device, dtype=x.dtype)[None, :]
    return tokens, ids.reshape(1, h_len * w_len, 3).repeat(b, 1, 1)


def unpatchify(tokens: torch.Tensor, h: int, w: int, patch: int) -> torch.Tensor:
    b, _, d = tokens.shape
    hp, wp = (h + patch - 1) // patch, (w + patch - 1) // patch
    c = d // (patch * patch)
    x = tokens.reshape(b, hp, wp, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(b, c, hp * patch, wp * patch)
    return x[:, :, :h, :w]


def reference_tokens(refs: list[torch.Tensor], patch: int, h_len: int, w_len: int,
                     method: str = "offset") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Tokens and ids of Kontext's reference latents, placed by ``method`` (offset, index, uxo)."""
    out = []
    h = w = index = 0
    for ref in refs:
        if method == "index":
            index += 1
            h_offset = w_offset = 0
        elif method == "uxo":
            index = 0
            h_offset, w_offset = h_len * patch + h, w_len * patch + w
            h += ref.shape[-2]
            w += ref.shape[-1]
        else:
            index, h_offset, w_offset = 1, 0, 0
            if ref.shape[-2] + h > ref.shape[-1] + w:
                w_offset = w
            else:
                h_offset = h
            h = max(h, ref.shape[-2] + h_offset)
            w = max(w, ref.shape[-1] + w_offset)
        out.append(patchify(ref, patch, index, h_offset, w_offset))
    return out


class Flux(nn.Module):
    """The network; ``ops`` is the layer namespace (model/ops.py): casting layers for fp8 / mixed precision."""

    def __init__(self, params: FluxParams, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.params = p = params
        self.patch_size = p.patch_size
        self.compute_dtype = compute_dtype
        self.in_channels = p.in_channels
        self.out_channels = p.out_channels
        self.hidden_size = p.hidden_size
        self.num_heads = p.num_heads
        self.img_in = ops.Linear(p.in_channels, p.hidden_size)
        self.time_in = MLPEmbedder(256, p.hidden_size, ops)
        self.vector_in = MLPEmbedder(p.vec_in_dim, p.hidden_size, ops)
        if p.guidance_embed:
            self.guidance_in = MLPEmbedder(256, p.hidden_size, ops)
        self.txt_in = ops.Linear(p.context_in_dim, p.hidden_size)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio, p.qkv_bias, ops)
                                           for _ in range(p.depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio, ops)
                                           for _ in range(p.depth_single_blocks))
        self.final_layer = LastLayer(p.hidden_size, p.out_channels, ops)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.img_in.weight.dtype

    # -- the conditioning vector --------------------------------------------------------------------

    def embed_vector(self, timesteps: torch.Tensor, y: torch.Tensor | None, guidance: torch.Tensor | None,
                     dtype: torch.dtype, batch: int, device: Any) -> torch.Tensor:
        vec = self.time_in(timestep_embedding(timesteps.to(device), 256).to(dtype))
        if self.params.guidance_embed and guidance is not None:
            vec = vec + self.guidance_in(timestep_embedding(guidance.to(device), 256).to(dtype))
        if y is None:
            y = torch.zeros((batch, self.params.vec_in_dim), device=device, dtype=dtype)
        return vec + self.vector_in(y[:, : self.params.vec_in_dim].to(device=device, dtype=dtype))

    # -- the blocks ---------------------------------------------------------------------------------

    def forward_orig(self, img: torch.Tensor, img_ids: torch.Tensor, txt: torch.Tensor, txt_ids: torch.Tensor,
                     timesteps: torch.Tensor, y: torch.Tensor | None, guidance: torch.Tensor | None = None,
                     control: dict[str, list] | None = None, transformer_options: dict[str, Any] | None = None,
                     attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Output tokens [B, n_img, out] of image tokens (with any reference tokens) and text tokens."""
        options = transformer_options if transformer_options is not None else {}
        patches = options.get("patches", {})
        replace = options.get("patches_replace", {}).get("dit", {})
        img = self.img_in(img)
        vec = self.embed_vector(timesteps, y, guidance, img.dtype, img.shape[0], img.device)
        txt = self.txt_in(txt)
        for patch in patches.get("post_input", ()):
            out = patch({"img": img, "txt": txt, "img_ids": img_ids, "txt_ids": txt_ids,
                         "transformer_options": options})
            img, txt, img_ids, txt_ids = out["img"], out["txt"], out["img_ids"], out["txt_ids"]
        pe = position_embedding(torch.cat((txt_ids, img_ids), dim=1), self.params.axes_dim, self.params.theta) \
            if img_ids is not None else None
        total = len(self.double_blocks) + len(self.single_blocks)
        options["total_blocks"] = total
        options["block_type"] = "double"
        for i, block in enumerate(self.double_blocks):
            options["block_index"] = i
            img, txt = self._double(block, i, img, txt, vec, pe, attn_mask, options, replace)
            for patch in patches.get("double_block", ()):
                out = patch({"img": img, "txt": txt, "x": img, "block_index": i, "transformer_options": options})
                img, txt = out["img"], out["txt"]
            if control is not None:
                residuals = control.get("input") or []
                if i < len(residuals) and residuals[i] is not None:
                    img[:, : residuals[i].shape[1]] += residuals[i]
        img = clamp_fp16(img)
        img = torch.cat((txt, img), 1)
        options["block_type"] = "single"
        for i, block in enumerate(self.single_blocks):
            options["block_index"] = i
            img = self._single(block, i, img, vec, pe, attn_mask, options, replace)
            if control is not None:
                residuals = control.get("output") or []
                if i < len(residuals) and residuals[i] is not None:
                    add = residuals[i]
                    img[:, txt.shape[1]: txt.shape[1] + add.shape[1]] += add
        img = img[:, txt.shape[1]:]
        return self.final_layer(img, self.final_vector(vec))

    def final_vector(self, vec: Any) -> Any:
        return vec

    @staticmethod
    def _double(block: nn.Module, i: int, img: torch.Tensor, txt: torch.Tensor, vec: Any, pe: Any, attn_mask: Any,
                options: dict[str, Any], replace: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if ("double_block", i) not in replace:
            return block(img=img, txt=txt, vec=vec, pe=pe, attn_mask=attn_mask, transformer_options=options)

        def original(args: dict[str, Any]) -> dict[str, torch.Tensor]:
            out_img, out_txt = block(img=args["img"], txt=args["txt"], vec=args["vec"], pe=args["pe"],
                                     attn_mask=args.get("attn_mask"),
                                     transformer_options=args.get("transformer_options"))
            return {"img": out_img, "txt": out_txt}

        out = replace[("double_block", i)]({"img": img, "txt": txt, "vec": vec, "pe": pe, "attn_mask": attn_mask,
                                            "transformer_options": options}, {"original_block": original})
        return out["img"], out["txt"]

    @staticmethod
    def _single(block: nn.Module, i: int, img: torch.Tensor, vec: Any, pe: Any, attn_mask: Any,
                options: dict[str, Any], replace: dict) -> torch.Tensor:
        if ("single_block", i) not in replace:
            return block(img, vec=vec, pe=pe, attn_mask=attn_mask, transformer_options=options)

        def original(args: dict[str, Any]) -> dict[str, torch.Tensor]:
            return {"img": block(args["img"], vec=args["vec"], pe=args["pe"], attn_mask=args.get("attn_mask"),
                                 transformer_options=args.get("transformer_options"))}

        out = replace[("single_block", i)]({"img": img, "vec": vec, "pe": pe, "attn_mask": attn_mask,
                                            "transformer_options": options}, {"original_block": original})
        return out["img"]

    # -- latents in and out -------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None, ref_latents: list[torch.Tensor] | None = None,
                control: dict[str, list] | None = None, transformer_options: dict[str, Any] | None = None,
                **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        wrappers = extension.get_all_wrappers(extension.WrappersMP.DIFFUSION_MODEL, options)
        return extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timestep, context, y, guidance, ref_latents, control, options, **kwargs)

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None,
                 guidance: torch.Tensor | None = None, ref_latents: list[torch.Tensor] | None = None,
                 control: dict[str, list] | None = None, transformer_options: dict[str, Any] | None = None,
                 **kwargs: Any) -> torch.Tensor:
        dtype = self.dtype
        device = x.device  # where the sampler runs; weights may be streamed there layer by layer
        bs, _, h, w = x.shape
        patch = self.patch_size
        x = x.to(device=device, dtype=dtype)
        img, img_ids = patchify(x, patch)
        img_tokens = img.shape[1]
        if ref_latents is not None:
            h_len, w_len = (h + patch // 2) // patch, (w + patch // 2) // patch
            for tokens, ids in reference_tokens([r.to(device=device, dtype=dtype) for r in ref_latents], patch,
                                                h_len, w_len, kwargs.get("ref_latents_method", "offset")):
                img = torch.cat([img, tokens], dim=1)
                img_ids = torch.cat([img_ids, ids], dim=1)
        context = context.to(device=device, dtype=dtype)
        txt_ids = torch.zeros((bs, context.shape[1], 3), device=device, dtype=dtype)
        out = self.forward_orig(img, img_ids, context, txt_ids, timestep.to(device), y, guidance, control,
                                transformer_options, attn_mask=kwargs.get("attention_mask"))
        return unpatchify(out[:, :img_tokens], h, w, patch).float()
