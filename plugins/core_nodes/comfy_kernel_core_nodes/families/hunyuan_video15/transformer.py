"""The HunyuanVideo 1.5 transformer: Flux-style double stream blocks over video tokens and three text streams.

The latent (32 channels, plus 33 channels of start-image latent and mask in
every released model) is cut into 1x1x1 patches; each token has a 3-axis
rotary position (frame, row, column; 16/56/56 channels of each 128-channel
head, theta 256). The text side joins, in this order: the SigLIP image
tokens (I2V, projected by ``vision_in``), the byT5 glyph tokens (``byt5_in``,
only when the prompt quotes text) and the Qwen2.5-VL tokens after a
two-block token refiner; a learned ``cond_type_embedding`` tags each stream.
Image tokens come first in the joint attention (the opposite of Flux); text
tokens sit at position 0. There are no single stream blocks in the released
models (the code keeps them for the layout's sake).

Module names are ComfyUI's (``double_blocks.N.img_attn.qkv``,
``txt_in.individual_token_refiner.blocks.N.self_attn.qkv`` ...); the
original checkpoints' names (``img_attn_qkv``, ``img_mod.linear``,
``mlp.fc1``, ``c_embedder.linear_1`` ...) are mapped by :func:`module_key`.
The super-resolution model adds ``time_r_in``, the embedding of the next
sigma (MeanFlow), averaged into the conditioning vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import extension
from ...model import ops as _ops
from ...model.attention import optimized_attention
from ..flux.layers import (
    DoubleStreamBlock,
    LastLayer,
    MLPEmbedder,
    SingleStreamBlock,
    position_embedding,
    timestep_embedding,
)

#: substring renames from the original checkpoints' names to the module names (idempotent on the latter)
RENAMES = (
    ("txt_in.t_embedder.mlp.0.", "txt_in.t_embedder.in_layer."),
    ("txt_in.t_embedder.mlp.2.", "txt_in.t_embedder.out_layer."),
    ("txt_in.c_embedder.linear_1.", "txt_in.c_embedder.in_layer."),
    ("txt_in.c_embedder.linear_2.", "txt_in.c_embedder.out_layer."),
    ("_mod.linear.", "_mod.lin."), ("_attn_qkv.", "_attn.qkv."), ("_attn_proj.", "_attn.proj."),
    ("mlp.fc1.", "mlp.0."), ("mlp.fc2.", "mlp.2."),
    ("_attn_q_norm.weight", "_attn.norm.query_norm.scale"), ("_attn_k_norm.weight", "_attn.norm.key_norm.scale"),
    (".q_norm.weight", ".norm.query_norm.scale"), (".k_norm.weight", ".norm.key_norm.scale"),
    (".modulation.linear.", ".modulation.lin."),
    ("_in.mlp.2.", "_in.out_layer."), ("_in.mlp.0.", "_in.in_layer."),
)


def module_key(key: str) -> str:
    """The module name of a file key in either layout (the original one or ComfyUI's)."""
    for old, new in RENAMES:
        key = key.replace(old, new)
    return key


@dataclass(frozen=True)
class HunyuanVideo15Config:
    in_channels: int = 65
    out_channels: int = 32
    hidden_size: int = 2048
    num_heads: int = 16
    depth: int = 54
    depth_single_blocks: int = 0
    context_in_dim: int = 3584
    mlp_ratio: float = 4.0
    axes_dim: tuple[int, int, int] = (16, 56, 56)
    theta: int = 256
    patch_size: tuple[int, int, int] = (1, 1, 1)
    byt5: bool = True
    byt5_dim: int = 1472
    vision_in_dim: int | None = 1152
    cond_type_embedding: bool = True
    meanflow: bool = False
    guidance_embed: bool = False


class RefinerAttention(nn.Module):
    def __init__(self, dim: int, ops: Any) -> None:
        super().__init__()
        self.qkv = ops.Linear(dim, dim * 3)
        self.proj = ops.Linear(dim, dim)


class TokenRefinerBlock(nn.Module):
    """Self-attention and an MLP over the text tokens, gated by the (time + pooled text) vector."""

    def __init__(self, dim: int, heads: int, ops: Any) -> None:
        super().__init__()
        self.heads = heads
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(dim, 2 * dim))
        self.norm1 = ops.LayerNorm(dim, elementwise_affine=True, eps=1e-6)
        self.self_attn = RefinerAttention(dim, ops)
        self.norm2 = ops.LayerNorm(dim, elementwise_affine=True, eps=1e-6)
        self.mlp = nn.Sequential(ops.Linear(dim, dim * 4), nn.SiLU(), ops.Linear(dim * 4, dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None,
                options: dict[str, Any]) -> torch.Tensor:
        gate_attn, gate_mlp = self.adaLN_modulation(c).chunk(2, dim=1)
        b, n, _ = x.shape
        q, k, v = self.self_attn.qkv(self.norm1(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = optimized_attention(q, k, v, self.heads, mask=mask, skip_reshape=True, transformer_options=options)
        x = x + self.self_attn.proj(attn) * gate_attn.unsqueeze(1)
        return x + self.mlp(self.norm2(x)) * gate_mlp.unsqueeze(1)


class IndividualTokenRefiner(nn.Module):
    def __init__(self, dim: int, heads: int, depth: int, ops: Any) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TokenRefinerBlock(dim, heads, ops) for _ in range(depth))

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None,
                options: dict[str, Any]) -> torch.Tensor:
        full = None
        if mask is not None:  # additive key mask [B, L] -> [B, 1, L, L], padded queries masked too
            rows = mask.view(mask.shape[0], 1, 1, mask.shape[1]).repeat(1, 1, mask.shape[1], 1)
            full = rows + rows.transpose(2, 3)
        for block in self.blocks:
            x = block(x, c, full, options)
        return x


class TokenRefiner(nn.Module):
    """``txt_in``: the Qwen2.5-VL states projected to the model width and refined."""

    def __init__(self, text_dim: int, dim: int, heads: int, ops: Any, depth: int = 2) -> None:
        super().__init__()
        self.input_embedder = ops.Linear(text_dim, dim)
        self.t_embedder = MLPEmbedder(256, dim, ops)
        self.c_embedder = MLPEmbedder(text_dim, dim, ops)
        self.individual_token_refiner = IndividualTokenRefiner(dim, heads, depth, ops)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, mask: torch.Tensor | None,
                options: dict[str, Any]) -> torch.Tensor:
        t = self.t_embedder(timestep_embedding(timesteps, 256, time_factor=1.0).to(x.dtype))
        pooled = x.float().sum(dim=1) / x.shape[1]  # ComfyUI's plain mean over all tokens
        c = t + self.c_embedder(pooled.to(x.dtype))
        return self.individual_token_refiner(self.input_embedder(x), c, mask, options)


class ByT5Mapper(nn.Module):
    """``byt5_in``: LayerNorm, then three Linear layers with GELU between them."""

    def __init__(self, in_dim: int, out_dim: int, ops: Any, hidden: int = 2048) -> None:
        super().__init__()
        self.layernorm = ops.LayerNorm(in_dim)
        self.fc1 = ops.Linear(in_dim, hidden)
        self.fc2 = ops.Linear(hidden, hidden)
        self.fc3 = ops.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(self.layernorm(x))))))


class VisionProjection(nn.Module):
    """``vision_in``: SigLIP tokens to the model width (LayerNorm, Linear, GELU, Linear, LayerNorm)."""

    def __init__(self, in_dim: int, out_dim: int, ops: Any) -> None:
        super().__init__()
        self.proj = nn.Sequential(ops.LayerNorm(in_dim), ops.Linear(in_dim, in_dim), nn.GELU(),
                                  ops.Linear(in_dim, out_dim), ops.LayerNorm(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class PatchEmbed3d(nn.Module):
    def __init__(self, patch: tuple[int, int, int], in_channels: int, dim: int, ops: Any) -> None:
        super().__init__()
        self.proj = ops.Conv3d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def video_ids(t: int, h: int, w: int, batch: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """Token positions [B, t*h*w, 3]: frame, row, column."""
    grid = torch.meshgrid(torch.arange(t, device=device), torch.arange(h, device=device),
                          torch.arange(w, device=device), indexing="ij")
    ids = torch.stack(grid, dim=-1).reshape(1, t * h * w, 3).to(dtype)
    return ids.repeat(batch, 1, 1)


class HunyuanVideo15Transformer(nn.Module):
    """``forward(x, timestep, context, ...)``: velocity [B, 32, T, H, W] of x [B, in_channels, T, H, W]."""

    def __init__(self, config: HunyuanVideo15Config, ops: Any = _ops.plain,
                 compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.compute_dtype = compute_dtype
        dim = c.hidden_size
        self.img_in = PatchEmbed3d(c.patch_size, c.in_channels, dim, ops)
        self.time_in = MLPEmbedder(256, dim, ops)
        if c.guidance_embed:
            self.guidance_in = MLPEmbedder(256, dim, ops)
        self.txt_in = TokenRefiner(c.context_in_dim, dim, c.num_heads, ops)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(dim, c.num_heads, c.mlp_ratio, True, ops, image_first=True) for _ in range(c.depth))
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(dim, c.num_heads, c.mlp_ratio, ops) for _ in range(c.depth_single_blocks))
        if c.byt5:
            self.byt5_in = ByT5Mapper(c.byt5_dim, dim, ops)
        if c.meanflow:
            self.time_r_in = MLPEmbedder(256, dim, ops)
        self.final_layer = LastLayer(dim, c.out_channels * c.patch_size[0] * c.patch_size[1] * c.patch_size[2], ops)
        if c.vision_in_dim is not None:
            self.vision_in = VisionProjection(c.vision_in_dim, dim, ops)
        if c.cond_type_embedding:
            self.cond_type_embedding = ops.Embedding(3, dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.img_in.proj.weight.dtype

    def _tag(self, x: torch.Tensor, kind: int) -> torch.Tensor:
        """Add the stream's type embedding (0 text, 1 byT5, 2 image) when the model has them."""
        if not self.config.cond_type_embedding:
            return x
        ids = torch.full(x.shape[:2], kind, dtype=torch.long, device=x.device)
        table = self.cond_type_embedding
        emb = table(ids, x.dtype) if isinstance(table, _ops.CastEmbedding) else table(ids)
        return x + emb.to(x.dtype)

    def text_tokens(self, context: torch.Tensor, timesteps: torch.Tensor, mask: torch.Tensor | None,
                    txt_byt5: torch.Tensor | None, clip_fea: torch.Tensor | None,
                    options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The joint text sequence (image, byT5, Qwen tokens) and its additive key mask, or None."""
        txt = self._tag(self.txt_in(context, timesteps, mask, options), 0)
        parts, masks = [txt], [mask]
        if txt_byt5 is not None and self.config.byt5:
            byt5 = self._tag(self.byt5_in(txt_byt5.to(txt.dtype)), 1)
            parts.insert(0, byt5)
            masks.insert(0, None)
        if clip_fea is not None and self.config.vision_in_dim is not None:
            vision = self._tag(self.vision_in(clip_fea.to(txt.dtype)), 2)
            parts.insert(0, vision)
            masks.insert(0, None)
        joint = torch.cat(parts, dim=1)
        if mask is None:
            return joint, None
        full = [m if m is not None else torch.zeros(p.shape[:2], dtype=mask.dtype, device=mask.device)
                for m, p in zip(masks, parts, strict=True)]
        return joint, torch.cat(full, dim=1)

    def vector(self, timesteps: torch.Tensor, guidance: torch.Tensor | None, dtype: torch.dtype,
               options: dict[str, Any], disable_time_r: bool) -> torch.Tensor:
        vec = self.time_in(timestep_embedding(timesteps, 256, time_factor=1.0).to(dtype))
        if self.config.meanflow and not disable_time_r:
            sigmas, schedule = options.get("sigmas"), options.get("sample_sigmas")
            if sigmas is not None and schedule is not None:
                at = torch.where(sigmas[0] == schedule)[0]
                if len(at) > 0 and at[0] + 1 < len(schedule):
                    nxt = schedule[at[0] + 1].reshape(1).to(device=timesteps.device, dtype=timesteps.dtype)
                    vec_r = self.time_r_in(timestep_embedding(nxt, 256, time_factor=1000.0).to(dtype))
                    vec = (vec + vec_r) / 2
        if self.config.guidance_embed and guidance is not None:
            vec = vec + self.guidance_in(timestep_embedding(guidance.to(timesteps.device), 256).to(dtype))
        return vec

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                txt_byt5: torch.Tensor | None = None, clip_fea: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                disable_time_r: bool = False, control: Any = None,
                transformer_options: dict[str, Any] | None = None, **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        wrappers = extension.get_all_wrappers(extension.WrappersMP.DIFFUSION_MODEL, options)
        return extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timestep, context, txt_byt5, clip_fea, guidance, attention_mask, disable_time_r, control, options,
            **kwargs)

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                 txt_byt5: torch.Tensor | None, clip_fea: torch.Tensor | None, guidance: torch.Tensor | None,
                 attention_mask: torch.Tensor | None, disable_time_r: bool, control: Any,
                 options: dict[str, Any], **kwargs: Any) -> torch.Tensor:
        c = self.config
        dtype = self.dtype
        b, _, t, h, w = x.shape
        pt, ph, pw = c.patch_size
        x = x.to(dtype)
        img = self.img_in(x)
        timesteps = timestep.to(x.device)
        vec = self.vector(timesteps, guidance, img.dtype, options, bool(disable_time_r))
        mask = attention_mask
        if mask is not None and not torch.is_floating_point(mask):
            mask = (mask.to(x.device) - 1).to(dtype) * torch.finfo(dtype).max
        txt, txt_mask = self.text_tokens(context.to(device=x.device, dtype=dtype), timesteps, mask,
                                         txt_byt5, clip_fea, options)
        img_ids = video_ids(t // pt, h // ph, w // pw, b, x.device, torch.float32)
        ids = torch.cat((img_ids, torch.zeros(b, txt.shape[1], 3, device=x.device)), dim=1)
        pe = position_embedding(ids, c.axes_dim, c.theta)
        attn_mask = None
        if txt_mask is not None:
            attn_mask = torch.zeros((1, 1, img.shape[1] + txt.shape[1]), dtype=dtype, device=x.device)
            attn_mask[:, 0, img.shape[1]:] = txt_mask
        img = self._blocks(img, txt, vec, pe, attn_mask, control, options)
        out = self.final_layer(img, vec)
        out = out.reshape(b, t // pt, h // ph, w // pw, c.out_channels, pt, ph, pw)
        return out.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, c.out_channels, t, h, w)

    def _blocks(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, pe: torch.Tensor,
                attn_mask: torch.Tensor | None, control: Any, options: dict[str, Any]) -> torch.Tensor:
        """The double blocks (patchable as ComfyUI's ``("double_block", i)``), then any single blocks."""
        replace = options.get("patches_replace", {}).get("dit", {})
        options["total_blocks"] = len(self.double_blocks)
        options["block_type"] = "double"
        for i, block in enumerate(self.double_blocks):
            options["block_index"] = i
            if ("double_block", i) in replace:
                def original(args: dict[str, Any], block: nn.Module = block) -> dict[str, torch.Tensor]:
                    out_img, out_txt = block(img=args["img"], txt=args["txt"], vec=args["vec"], pe=args["pe"],
                                             attn_mask=args.get("attention_mask"),
                                             transformer_options=args.get("transformer_options"))
                    return {"img": out_img, "txt": out_txt}

                out = replace[("double_block", i)]({"img": img, "txt": txt, "vec": vec, "pe": pe,
                                                    "attention_mask": attn_mask, "transformer_options": options},
                                                   {"original_block": original})
                img, txt = out["img"], out["txt"]
            else:
                img, txt = block(img=img, txt=txt, vec=vec, pe=pe, attn_mask=attn_mask, transformer_options=options)
            if control is not None:
                residuals = control.get("input") or []
                if i < len(residuals) and residuals[i] is not None:
                    img = img + residuals[i]
        if len(self.single_blocks):
            n = img.shape[1]
            joint = torch.cat((img, txt), 1)
            options["total_blocks"] = len(self.single_blocks)
            options["block_type"] = "single"
            for i, block in enumerate(self.single_blocks):
                options["block_index"] = i
                joint = block(joint, vec=vec, pe=pe, attn_mask=attn_mask, transformer_options=options)
            img = joint[:, :n]
        return img
