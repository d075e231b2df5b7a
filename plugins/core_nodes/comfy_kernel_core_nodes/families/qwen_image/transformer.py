"""Qwen-Image's diffusion transformer: an MMDiT whose blocks attend jointly over text and image tokens.

Each of the 60 blocks keeps two streams (text, image) with their own
modulation, projections and MLPs and one joint attention over both; rotary
positions are 3-d (frame, row, column), image rows and columns centred on 0,
text tokens placed after the image on every axis. Edit models append the
reference images' tokens to the image stream: each reference gets the next
frame index ("index" method) or, with the "offset" method, is placed beside
the previous ones; Qwen-Image-Edit-2511 modulates reference tokens with the
embedding of timestep 0 ("index_timestep_zero").

Names follow the released weights (``transformer_blocks.N.attn.to_q``,
``img_mod.1``, ``norm_out.linear`` ...). Blocks call ComfyUI's DiT patch
points: ``patches_replace["dit"][("double_block", i)]`` and
``patches["double_block"]``, and ControlNet residuals added to the image stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...components.rope import apply_rope, rope_angles
from ...model import extension
from ...model import ops as _ops
from ...model.attention import optimized_attention


@dataclass(frozen=True)
class QwenImageConfig:
    patch_size: int = 2
    in_channels: int = 64
    out_channels: int = 16
    num_layers: int = 60
    attention_head_dim: int = 128
    num_attention_heads: int = 24
    joint_attention_dim: int = 3584
    axes_dims_rope: tuple[int, int, int] = (16, 56, 56)
    default_ref_method: str = "index"

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


def timestep_embedding(t: torch.Tensor, dim: int = 256, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features of ``scale * t``, cosines first (diffusers' ``flip_sin_to_cos``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = scale * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepProjEmbeddings(nn.Module):
    def __init__(self, dim: int, ops: Any) -> None:
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(256, dim, ops)

    def forward(self, timestep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.timestep_embedder(timestep_embedding(timestep).to(dtype))


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, dim: int, ops: Any) -> None:
        super().__init__()
        self.linear_1 = ops.Linear(in_channels, dim)
        self.linear_2 = ops.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class GELUProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, ops: Any) -> None:
        super().__init__()
        self.proj = ops.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, dim: int, ops: Any, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([GELUProj(dim, dim * mult, ops), nn.Dropout(0.0), ops.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class JointAttention(nn.Module):
    """Separate q/k/v projections per stream, RMS-normed heads, one attention over [text, image]."""

    def __init__(self, dim: int, heads: int, head_dim: int, ops: Any) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.norm_q = ops.RMSNorm(head_dim, eps=1e-6)
        self.norm_k = ops.RMSNorm(head_dim, eps=1e-6)
        self.norm_added_q = ops.RMSNorm(head_dim, eps=1e-6)
        self.norm_added_k = ops.RMSNorm(head_dim, eps=1e-6)
        self.to_q, self.to_k, self.to_v = (ops.Linear(dim, inner) for _ in range(3))
        self.add_q_proj, self.add_k_proj, self.add_v_proj = (ops.Linear(dim, inner) for _ in range(3))
        self.to_out = nn.ModuleList([ops.Linear(inner, dim), nn.Dropout(0.0)])
        self.to_add_out = ops.Linear(inner, dim)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, rope: torch.Tensor,
                transformer_options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (self.heads, -1))

        q = torch.cat([self.norm_added_q(heads(self.add_q_proj(txt))), self.norm_q(heads(self.to_q(img)))], dim=1)
        k = torch.cat([self.norm_added_k(heads(self.add_k_proj(txt))), self.norm_k(heads(self.to_k(img)))], dim=1)
        v = torch.cat([heads(self.add_v_proj(txt)), heads(self.to_v(img))], dim=1)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = optimized_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), self.heads,
                                  skip_reshape=True, transformer_options=transformer_options)
        n_txt = txt.shape[1]
        return self.to_out[1](self.to_out[0](out[:, n_txt:])), self.to_add_out(out[:, :n_txt])


def modulate(x: torch.Tensor, params: torch.Tensor, split: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x * (1 + scale) + shift, gate) from params [B or 2B, 3 * dim].

    With ``split``, params hold two batches: tokens before ``split`` use the
    first, the rest (reference images at timestep 0) the second.
    """
    shift, scale, gate = params.chunk(3, dim=-1)
    if split is None:
        return torch.addcmul(shift[:, None], x, 1 + scale[:, None]), gate[:, None]
    b = x.shape[0]
    pick = torch.zeros(x.shape[1], 1, dtype=torch.bool, device=x.device)
    pick[split:] = True
    shift = torch.where(pick, shift[b:, None], shift[:b, None])
    scale = torch.where(pick, scale[b:, None], scale[:b, None])
    gate = torch.where(pick, gate[b:, None], gate[:b, None])
    return x * (1 + scale) + shift, gate


class QwenImageBlock(nn.Module):
    def __init__(self, c: QwenImageConfig, ops: Any) -> None:
        super().__init__()
        dim = c.inner_dim
        self.img_mod = nn.Sequential(nn.SiLU(), ops.Linear(dim, 6 * dim))
        self.img_norm1 = ops.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.img_norm2 = ops.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.img_mlp = FeedForward(dim, ops)
        self.txt_mod = nn.Sequential(nn.SiLU(), ops.Linear(dim, 6 * dim))
        self.txt_norm1 = ops.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.txt_norm2 = ops.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.txt_mlp = FeedForward(dim, ops)
        self.attn = JointAttention(dim, c.num_attention_heads, c.attention_head_dim, ops)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, rope: torch.Tensor,
                transformer_options: dict[str, Any], zero_split: int | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(txt, img) after the block; ``vec`` is [2B, dim] when ``zero_split`` is set."""
        img_mod1, img_mod2 = self.img_mod(vec).chunk(2, dim=-1)
        txt_vec = vec[: txt.shape[0]] if zero_split is not None else vec
        txt_mod1, txt_mod2 = self.txt_mod(txt_vec).chunk(2, dim=-1)
        img_in, img_gate1 = modulate(self.img_norm1(img), img_mod1, zero_split)
        txt_in, txt_gate1 = modulate(self.txt_norm1(txt), txt_mod1)
        img_attn, txt_attn = self.attn(img_in, txt_in, rope, transformer_options)
        img = img + img_gate1 * img_attn
        txt = txt + txt_gate1 * txt_attn
        img_in, img_gate2 = modulate(self.img_norm2(img), img_mod2, zero_split)
        img = torch.addcmul(img, img_gate2, self.img_mlp(img_in))
        txt_in, txt_gate2 = modulate(self.txt_norm2(txt), txt_mod2)
        txt = torch.addcmul(txt, txt_gate2, self.txt_mlp(txt_in))
        if img.dtype == torch.float16:
            img, txt = img.clip(-65504, 65504), txt.clip(-65504, 65504)
        return txt, img


class LastLayer(nn.Module):
    def __init__(self, dim: int, ops: Any) -> None:
        super().__init__()
        self.linear = ops.Linear(dim, 2 * dim)
        self.norm = ops.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(vec)).chunk(2, dim=1)
        return torch.addcmul(shift[:, None], self.norm(x), 1 + scale[:, None])


class QwenImageTransformer(nn.Module):
    """``forward(x [B, 16, 1, H, W], timestep (sigma), context [B, L, 3584], ref_latents=...)`` -> velocity."""

    def __init__(self, config: QwenImageConfig, ops: Any = _ops.plain,
                 compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.compute_dtype = compute_dtype
        self.patch_size = c.patch_size
        self.in_channels = c.in_channels
        self.time_text_embed = TimestepProjEmbeddings(c.inner_dim, ops)
        self.txt_norm = ops.RMSNorm(c.joint_attention_dim, eps=1e-6)
        self.img_in = ops.Linear(c.in_channels, c.inner_dim)
        self.txt_in = ops.Linear(c.joint_attention_dim, c.inner_dim)
        self.transformer_blocks = nn.ModuleList([QwenImageBlock(c, ops) for _ in range(c.num_layers)])
        self.norm_out = LastLayer(c.inner_dim, ops)
        self.proj_out = ops.Linear(c.inner_dim, c.patch_size ** 2 * c.out_channels)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.proj_out.weight.dtype

    def patchify(self, x: torch.Tensor, index: int = 0, h_offset: int = 0, w_offset: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent [B, C, 1, H, W] -> (tokens [B, N, 4C], position ids [B, N, 3])."""
        p = self.patch_size
        if x.ndim == 5:
            x = x[:, :, 0]
        b, c, h, w = x.shape
        x = F.pad(x, (0, (-w) % p, 0, (-h) % p), mode="circular")
        hp, wp = x.shape[-2] // p, x.shape[-1] // p
        tokens = x.view(b, c, hp, p, wp, p).permute(0, 2, 4, 1, 3, 5).reshape(b, hp * wp, c * p * p)
        h_len, w_len = (h + p // 2) // p, (w + p // 2) // p
        h_offset, w_offset = (h_offset + p // 2) // p, (w_offset + p // 2) // p
        ids = torch.zeros(h_len, w_len, 3, device=x.device)
        ids[..., 0] = index
        ids[..., 1] = (torch.arange(h_len, device=x.device) + h_offset - h_len // 2)[:, None]
        ids[..., 2] = (torch.arange(w_len, device=x.device) + w_offset - w_len // 2)[None, :]
        return tokens, ids.reshape(1, -1, 3).expand(b, -1, -1)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                attention_mask: torch.Tensor | None = None, ref_latents: list[torch.Tensor] | None = None,
                transformer_options: dict[str, Any] | None = None, control: Any = None,
                **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        wrappers = extension.get_all_wrappers(extension.WrappersMP.DIFFUSION_MODEL, options)
        return extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timestep, context, attention_mask, ref_latents, options, control, **kwargs)

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, ref_latents: list[torch.Tensor] | None = None,
                 transformer_options: dict[str, Any] | None = None, control: Any = None,
                 ref_latents_method: str | None = None, **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        dtype, p = self.dtype, self.patch_size
        shape = x.shape
        img, img_ids = self.patchify(x)
        n_img = img.shape[1]
        method = ref_latents_method or self.config.default_ref_method
        if ref_latents:
            h = w = 0
            index = 0
            for ref in ref_latents:
                h_offset = w_offset = 0
                if method == "offset":
                    index = 1
                    if ref.shape[-2] + h > ref.shape[-1] + w:
                        w_offset = w
                    else:
                        h_offset = h
                    h, w = max(h, ref.shape[-2] + h_offset), max(w, ref.shape[-1] + w_offset)
                else:
                    index += 1
                tokens, ids = self.patchify(ref.to(x.device), index, h_offset, w_offset)
                img = torch.cat([img, tokens], dim=1)
                img_ids = torch.cat([img_ids, ids], dim=1)
        zero_split = n_img if ref_latents and method == "index_timestep_zero" else None

        txt_start = round(max(((shape[-1] + p // 2) // p) // 2, ((shape[-2] + p // 2) // p) // 2))
        txt_ids = torch.arange(txt_start, txt_start + context.shape[1], device=x.device, dtype=torch.float32)
        txt_ids = txt_ids[None, :, None].expand(shape[0], -1, 3)
        rope = rope_angles(torch.cat([txt_ids, img_ids.to(txt_ids)], dim=1), self.config.axes_dims_rope)
        rope = rope.unsqueeze(2).to(x.device)

        img = self.img_in(img.to(dtype))
        txt = self.txt_in(self.txt_norm(context.to(dtype)))
        t = timestep.to(x.device)
        if zero_split is not None:
            t = torch.cat([t, torch.zeros_like(t)])
        vec = self.time_text_embed(t, dtype)

        patches = options.get("patches", {})
        replace = options.get("patches_replace", {}).get("dit", {})
        options["total_blocks"] = len(self.transformer_blocks)
        options["block_type"] = "double"
        for i, block in enumerate(self.transformer_blocks):
            options["block_index"] = i
            if ("double_block", i) in replace:
                def original(args: dict[str, Any], block: nn.Module = block) -> dict[str, torch.Tensor]:
                    txt_out, img_out = block(args["img"], args["txt"], args["vec"], args["pe"],
                                             args["transformer_options"], zero_split)
                    return {"txt": txt_out, "img": img_out}

                out = replace[("double_block", i)]({"img": img, "txt": txt, "vec": vec, "pe": rope,
                                                    "transformer_options": options}, {"original_block": original})
                img, txt = out["img"], out["txt"]
            else:
                txt, img = block(img, txt, vec, rope, options, zero_split)
            for patch in patches.get("double_block", ()):
                out = patch({"img": img, "txt": txt, "x": x, "block_index": i, "transformer_options": options})
                img, txt = out["img"], out["txt"]
            if control is not None:
                residuals = control.get("input") or []
                if i < len(residuals) and residuals[i] is not None:
                    add = residuals[i]
                    img[:, :add.shape[1]] += add.to(img)

        if zero_split is not None:
            vec = vec[: shape[0]]
        out = self.proj_out(self.norm_out(img, vec))[:, :n_img]
        hp, wp = (shape[-2] + (-shape[-2]) % p) // p, (shape[-1] + (-shape[-1]) % p) // p
        out = out.reshape(shape[0], hp, wp, self.config.out_channels, p, p).permute(0, 3, 1, 4, 2, 5)
        out = out.reshape(shape[0], self.config.out_channels, hp * p, wp * p)[..., :shape[-2], :shape[-1]]
        return (out.unsqueeze(2) if len(shape) == 5 else out).float()
