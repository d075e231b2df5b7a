"""Stable Diffusion 3's MMDiT: joint blocks where text and image tokens attend together.

Each joint block has a context (text) half and an x (image) half with their
own projections, norms and MLPs; their q/k/v are concatenated (text first)
for one attention. The last block's text half is "pre-only" (it feeds the
attention and stops). SD3.5 adds RMS-normed q/k per head (``ln_q``/``ln_k``);
SD3.5 Medium adds a second, image-only attention (``attn2``) in some x blocks,
modulated by three more vectors. The time step and the pooled CLIP vector are
summed into the vector ``c`` that modulates every block; positions come from a
learned table (``pos_embed``, max_size x max_size), cropped around its centre.

Patch points, where ComfyUI calls them: ``patches_replace["dit"][("double_block", i)]``
replaces a joint block (called with ``{"img", "txt", "vec", "transformer_options"}``
and ``{"original_block": ...}``), as SkipLayerGuidanceSD3 uses;
``patches["post_input"]`` after the input projections; ``patches["double_block"]``
after each block; ControlNet residuals from ``control["output"]`` are added
to the image tokens after block i; the ``diffusion_model`` wrappers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model import extension
from ...model import ops as _ops
from ...model.attention import optimized_attention

HEAD_DIM = 64


@dataclass(frozen=True)
class MMDiTParams:
    in_channels: int = 16
    out_channels: int = 16
    patch_size: int = 2
    depth: int = 24
    adm_in_channels: int | None = 2048
    context_in: int | None = 4096
    pos_embed_max_size: int | None = 192
    qk_norm: str | None = None
    qkv_bias: bool = True
    mlp_ratio: float = 4.0
    x_block_self_attn_layers: tuple[int, ...] = field(default_factory=tuple)

    @property
    def hidden_size(self) -> int:
        return HEAD_DIM * self.depth


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of ``t`` (cosines first), in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Embedder(nn.Module):
    """Linear -> SiLU -> Linear (``mlp.0``, ``mlp.2``): the time step and pooled-vector embedders."""

    def __init__(self, in_dim: int, hidden: int, ops: Any) -> None:
        super().__init__()
        self.mlp = nn.Sequential(ops.Linear(in_dim, hidden), nn.SiLU(), ops.Linear(hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class PatchEmbed(nn.Module):
    """p x p patches -> tokens [B, h*w, hidden] (circular padding up to a multiple of p)."""

    def __init__(self, patch: int, in_channels: int, hidden: int, ops: Any) -> None:
        super().__init__()
        self.patch = patch
        self.proj = ops.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = (-x.shape[-2]) % self.patch, (-x.shape[-1]) % self.patch
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
        return self.proj(x).flatten(2).transpose(1, 2)


class SelfAttention(nn.Module):
    """q/k/v projection (``qkv``), optional per-head q/k norms, output projection (``proj``) unless pre-only."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, pre_only: bool, qk_norm: str | None, ops: Any) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = ops.Linear(dim, dim * 3, bias=qkv_bias)
        if not pre_only:
            self.proj = ops.Linear(dim, dim)
        if qk_norm == "rms":
            self.ln_q = ops.RMSNorm(HEAD_DIM, eps=1e-6)
            self.ln_k = ops.RMSNorm(HEAD_DIM, eps=1e-6)
        elif qk_norm == "ln":
            self.ln_q = ops.LayerNorm(HEAD_DIM, elementwise_affine=True, eps=1e-6)
            self.ln_k = ops.LayerNorm(HEAD_DIM, elementwise_affine=True, eps=1e-6)

    def pre_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v, each [B, L, heads * 64] (q and k normed per head)."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, HEAD_DIM).unbind(2)
        if hasattr(self, "ln_q"):
            q, k = self.ln_q(q), self.ln_k(k)
        return q.reshape(b, n, -1), k.reshape(b, n, -1), v.reshape(b, n, -1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, ops: Any) -> None:
        super().__init__()
        self.fc1 = ops.Linear(dim, hidden)
        self.fc2 = ops.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class HalfBlock(nn.Module):
    """One stream's half of a joint block (ComfyUI's "DismantledBlock")."""

    def __init__(self, p: MMDiTParams, pre_only: bool = False, self_attn: bool = False, ops: Any = _ops.plain) -> None:
        super().__init__()
        hidden, heads = p.hidden_size, p.depth
        self.pre_only, self.self_attn = pre_only, self_attn
        self.norm1 = ops.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(hidden, heads, p.qkv_bias, pre_only, p.qk_norm, ops)
        if self_attn:
            self.attn2 = SelfAttention(hidden, heads, p.qkv_bias, False, p.qk_norm, ops)
        if not pre_only:
            self.norm2 = ops.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
            self.mlp = Mlp(hidden, int(hidden * p.mlp_ratio), ops)
        mods = 9 if self_attn else 2 if pre_only else 6
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(hidden, mods * hidden))

    def pre_attention(self, x: torch.Tensor, c: torch.Tensor) -> tuple[tuple, tuple | None, tuple]:
        """(q, k, v), the second attention's (q, k, v) or None, and what post_attention needs."""
        mods = self.adaLN_modulation(c).chunk(9 if self.self_attn else 2 if self.pre_only else 6, dim=1)
        normed = self.norm1(x)
        qkv = self.attn.pre_attention(modulate(normed, mods[0], mods[1]))
        qkv2 = self.attn2.pre_attention(modulate(normed, mods[6], mods[7])) if self.self_attn else None
        return qkv, qkv2, (x, *mods[2:])

    def post_attention(self, attn: torch.Tensor, attn2: torch.Tensor | None, x: torch.Tensor,
                       *mods: torch.Tensor) -> torch.Tensor:
        gate_msa, shift_mlp, scale_mlp, gate_mlp = mods[:4]
        x = x + gate_msa.unsqueeze(1) * self.attn.proj(attn)
        if attn2 is not None:
            x = x + mods[6].unsqueeze(1) * self.attn2.proj(attn2)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class JointBlock(nn.Module):
    def __init__(self, p: MMDiTParams, index: int, ops: Any, pre_only: bool | None = None) -> None:
        super().__init__()
        pre_only = index == p.depth - 1 if pre_only is None else pre_only
        self.context_block = HalfBlock(p, pre_only=pre_only, ops=ops)
        self.x_block = HalfBlock(p, self_attn=index in p.x_block_self_attn_layers, ops=ops)
        self.heads = p.depth

    def forward(self, context: torch.Tensor, x: torch.Tensor, c: torch.Tensor,
                **kwargs: Any) -> tuple[torch.Tensor | None, torch.Tensor]:
        c_qkv, _, c_rest = self.context_block.pre_attention(context, c)
        x_qkv, x_qkv2, x_rest = self.x_block.pre_attention(x, c)
        q, k, v = (torch.cat((a, b), dim=1) for a, b in zip(c_qkv, x_qkv, strict=True))
        attn = optimized_attention(q, k, v, self.heads)
        n_context = context.shape[1]
        context = None if self.context_block.pre_only else \
            self.context_block.post_attention(attn[:, :n_context], None, *c_rest)
        attn2 = optimized_attention(*x_qkv2, self.heads) if x_qkv2 is not None else None
        return context, self.x_block.post_attention(attn[:, n_context:], attn2, *x_rest)


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int, out_channels: int, ops: Any) -> None:
        super().__init__()
        self.norm_final = ops.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = ops.Linear(hidden, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class MMDiT(nn.Module):
    """The network; ``ops`` is the layer namespace (model/ops.py): casting layers for fp8 / mixed precision."""

    def __init__(self, params: MMDiTParams, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.params = p = params
        self.compute_dtype = compute_dtype
        hidden = p.hidden_size
        self.x_embedder = PatchEmbed(p.patch_size, p.in_channels, hidden, ops)
        self.t_embedder = Embedder(256, hidden, ops)
        if p.adm_in_channels is not None:
            self.y_embedder = Embedder(p.adm_in_channels, hidden, ops)
        if p.context_in is not None:
            self.context_embedder = ops.Linear(p.context_in, hidden)
        if p.pos_embed_max_size is not None:
            self.pos_embed = nn.Parameter(torch.empty(1, p.pos_embed_max_size ** 2, hidden))
        self.joint_blocks = nn.ModuleList(JointBlock(p, i, ops) for i in range(p.depth))
        self.final_layer = FinalLayer(hidden, p.patch_size, p.out_channels, ops)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.x_embedder.proj.weight.dtype

    def cropped_pos_embed(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """The centre h x w of the position table, [1, h*w, hidden]."""
        size = self.params.pos_embed_max_size
        if h > size or w > size:
            raise ValueError(f"a latent of {h}x{w} patches exceeds this model's {size}x{size} positions")
        top, left = (size - h) // 2, (size - w) // 2
        table = _ops.cast_weight(self, "pos_embed", like)
        table = table.reshape(1, size, size, -1)[:, top:top + h, left:left + w]
        return table.reshape(1, h * w, -1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                y: torch.Tensor | None = None, control: dict[str, list] | None = None,
                transformer_options: dict[str, Any] | None = None, **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        wrappers = extension.get_all_wrappers(extension.WrappersMP.DIFFUSION_MODEL, options)
        return extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timesteps, context, y, control, options, **kwargs)

    def _forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                 y: torch.Tensor | None = None, control: dict[str, list] | None = None,
                 transformer_options: dict[str, Any] | None = None, **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        patches = options.get("patches", {})
        replace = options.get("patches_replace", {}).get("dit", {})
        dtype, device = self.dtype, x.device  # weights may be streamed to the sampler's device layer by layer
        p = self.params.patch_size
        h, w = x.shape[-2:]
        x = x.to(dtype=dtype)
        img = self.x_embedder(x)
        if hasattr(self, "pos_embed"):
            img = img + self.cropped_pos_embed((h + 1) // p, (w + 1) // p, img)
        c = self.t_embedder(timestep_embedding(timesteps.to(device)).to(dtype))
        if y is not None and hasattr(self, "y_embedder"):
            c = c + self.y_embedder(y.to(device=device, dtype=dtype))
        txt = self.context_embedder(context.to(device=device, dtype=dtype)) if context is not None else \
            img[:, :0]
        for patch in patches.get("post_input", ()):
            out = patch({"img": img, "txt": txt, "transformer_options": options})
            img, txt = out["img"], out["txt"]
        options["total_blocks"] = len(self.joint_blocks)
        options["block_type"] = "double"
        residuals = (control or {}).get("output") or []
        for i, block in enumerate(self.joint_blocks):
            options["block_index"] = i
            txt, img = self._block(block, i, txt, img, c, options, replace)
            for patch in patches.get("double_block", ()):
                out = patch({"img": img, "txt": txt, "x": img, "block_index": i, "transformer_options": options})
                img, txt = out["img"], out["txt"]
            if i < len(residuals) and residuals[i] is not None:
                img = img + residuals[i].to(img)
        out = self.final_layer(img, c)
        return self.unpatchify(out, h, w).float()

    @staticmethod
    def _block(block: JointBlock, i: int, txt: torch.Tensor, img: torch.Tensor, c: torch.Tensor,
               options: dict[str, Any], replace: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if ("double_block", i) not in replace:
            return block(txt, img, c)

        def original(args: dict[str, Any]) -> dict[str, Any]:
            out_txt, out_img = block(args["txt"], args["img"], args["vec"])
            return {"txt": out_txt, "img": out_img}

        out = replace[("double_block", i)]({"img": img, "txt": txt, "vec": c, "transformer_options": options},
                                           {"original_block": original})
        return out["txt"], out["img"]

    def unpatchify(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """[B, hp*wp, p*p*C] -> [B, C, h, w] (the padding cropped off)."""
        p, c = self.params.patch_size, self.params.out_channels
        hp, wp = (h + 1) // p, (w + 1) // p
        b = tokens.shape[0]
        x = tokens.reshape(b, hp, wp, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, hp * p, wp * p)
        return x[:, :, :h, :w]
