"""NextDiT, the single-stream diffusion transformer of Lumina-Image 2.0 and Z-Image.

Text features (an LLM's hidden states) and image patches are refined
separately first (``context_refiner`` without timestep modulation,
``noise_refiner`` with it), then concatenated [text, image] and run through
the main ``layers``. Every block is pre- and post-normed (RMSNorm) around its
attention and SwiGLU feed-forward, with tanh-gated, scale-only modulation.
Rotary positions are 3-d: text tokens count along the first axis; image
patches take the next first-axis index and their row and column.

Z-Image differs by a 256-wide timestep embedding without SiLU before the
block modulation, timesteps scaled by 1000, and learned pad tokens that round
the text and image sequences up to multiples of 32. The network predicts
the negated velocity, as ComfyUI's does (hence ``return -out``).

Names follow the released weights (``layers.N.attention.qkv``,
``feed_forward.w1``, ``adaLN_modulation.0``/``.1``, ``cap_embedder.1`` ...).
Patch points: ``patches["noise_refiner"]`` and ``patches["double_block"]``
with ComfyUI's argument dicts, and the diffusion-model wrappers.
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
class NextDiTConfig:
    patch_size: int = 2
    in_channels: int = 16
    dim: int = 2304
    n_layers: int = 26
    n_refiner_layers: int = 2
    n_heads: int = 24
    n_kv_heads: int = 8
    ffn_hidden: int = 9216
    norm_eps: float = 1e-5
    cap_feat_dim: int = 2304
    axes_dims: tuple[int, int, int] = (32, 32, 32)
    rope_theta: float = 10000.0
    z_image_modulation: bool = False
    time_scale: float = 1.0
    pad_tokens_multiple: int | None = None
    t_hidden: int | None = None  #: width of the timestep MLP (min(dim, 1024) in the released models)

    @property
    def adaln_dim(self) -> int:
        return min(self.dim, 256 if self.z_image_modulation else 1024)


LUMINA2 = NextDiTConfig()
Z_IMAGE = NextDiTConfig(dim=3840, n_layers=30, n_heads=30, n_kv_heads=30, ffn_hidden=10240, cap_feat_dim=2560,
                        axes_dims=(32, 48, 48), rope_theta=256.0, z_image_modulation=True, time_scale=1000.0,
                        pad_tokens_multiple=32)


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, out: int, ops: Any) -> None:
        super().__init__()
        self.mlp = nn.Sequential(ops.Linear(256, hidden), nn.SiLU(), ops.Linear(hidden, out))

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(timestep_features(t).to(dtype))


class Attention(nn.Module):
    def __init__(self, c: NextDiTConfig, ops: Any) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = c.n_heads, c.n_kv_heads, c.dim // c.n_heads
        self.qkv = ops.Linear(c.dim, (c.n_heads + 2 * c.n_kv_heads) * self.head_dim, bias=False)
        self.out = ops.Linear(c.n_heads * self.head_dim, c.dim, bias=False)
        eps = torch.finfo(torch.float32).eps  # ComfyUI's unset RMSNorm eps
        self.q_norm = ops.RMSNorm(self.head_dim, eps=eps)
        self.k_norm = ops.RMSNorm(self.head_dim, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rope: torch.Tensor,
                transformer_options: dict[str, Any]) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).split([self.heads * self.head_dim, self.kv_heads * self.head_dim,
                                     self.kv_heads * self.head_dim], dim=-1)
        q = self.q_norm(q.view(b, n, self.heads, self.head_dim))
        k = self.k_norm(k.view(b, n, self.kv_heads, self.head_dim))
        v = v.view(b, n, self.kv_heads, self.head_dim)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=2)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=2)
        out = optimized_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), self.heads, mask=mask,
                                  skip_reshape=True, transformer_options=transformer_options)
        return self.out(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, ops: Any) -> None:
        super().__init__()
        self.w1 = ops.Linear(dim, hidden, bias=False)
        self.w2 = ops.Linear(hidden, dim, bias=False)
        self.w3 = ops.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(clamp_fp16(F.silu(self.w1(x)) * self.w3(x)))


def clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.float16:
        return torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
    return x


class Block(nn.Module):
    def __init__(self, c: NextDiTConfig, ops: Any, modulation: bool = True) -> None:
        super().__init__()
        self.attention = Attention(c, ops)
        self.feed_forward = FeedForward(c.dim, c.ffn_hidden, ops)
        self.attention_norm1 = ops.RMSNorm(c.dim, eps=c.norm_eps)
        self.ffn_norm1 = ops.RMSNorm(c.dim, eps=c.norm_eps)
        self.attention_norm2 = ops.RMSNorm(c.dim, eps=c.norm_eps)
        self.ffn_norm2 = ops.RMSNorm(c.dim, eps=c.norm_eps)
        self.modulation = modulation
        if modulation:
            linear = ops.Linear(c.adaln_dim, 4 * c.dim)
            self.adaLN_modulation = nn.Sequential(linear) if c.z_image_modulation else nn.Sequential(nn.SiLU(), linear)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rope: torch.Tensor, vec: torch.Tensor | None,
                transformer_options: dict[str, Any]) -> torch.Tensor:
        if not self.modulation:
            x = x + self.attention_norm2(clamp_fp16(self.attention(self.attention_norm1(x), mask, rope,
                                                                   transformer_options)))
            return x + self.ffn_norm2(clamp_fp16(self.feed_forward(self.ffn_norm1(x))))
        scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(vec).chunk(4, dim=1)
        attn = self.attention(self.attention_norm1(x) * (1 + scale_msa[:, None]), mask, rope, transformer_options)
        x = x + gate_msa.tanh()[:, None] * self.attention_norm2(clamp_fp16(attn))
        ffn = self.feed_forward(self.ffn_norm1(x) * (1 + scale_mlp[:, None]))
        return x + gate_mlp.tanh()[:, None] * self.ffn_norm2(clamp_fp16(ffn))


class FinalLayer(nn.Module):
    def __init__(self, c: NextDiTConfig, ops: Any) -> None:
        super().__init__()
        self.norm_final = ops.LayerNorm(c.dim, elementwise_affine=False, eps=1e-6)
        self.linear = ops.Linear(c.dim, c.patch_size ** 2 * c.in_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(c.adaln_dim, c.dim))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        scale = self.adaLN_modulation(vec)
        return self.linear(self.norm_final(x) * (1 + scale[:, None]))


class NextDiT(nn.Module):
    """``forward(x [B, 16, H, W], timestep (sigma), context [B, L, cap_feat_dim])`` -> -velocity."""

    def __init__(self, config: NextDiTConfig, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.compute_dtype = compute_dtype
        self.in_channels = c.in_channels
        self.patch_size = c.patch_size
        self.x_embedder = ops.Linear(c.patch_size ** 2 * c.in_channels, c.dim)
        self.noise_refiner = nn.ModuleList([Block(c, ops) for _ in range(c.n_refiner_layers)])
        self.context_refiner = nn.ModuleList([Block(c, ops, modulation=False) for _ in range(c.n_refiner_layers)])
        self.t_embedder = TimestepEmbedder(c.t_hidden or min(c.dim, 1024), c.adaln_dim, ops)
        self.cap_embedder = nn.Sequential(ops.RMSNorm(c.cap_feat_dim, eps=c.norm_eps),
                                          ops.Linear(c.cap_feat_dim, c.dim))
        self.layers = nn.ModuleList([Block(c, ops) for _ in range(c.n_layers)])
        self.final_layer = FinalLayer(c, ops)
        if c.pad_tokens_multiple is not None:
            self.x_pad_token = nn.Parameter(torch.empty(1, c.dim))
            self.cap_pad_token = nn.Parameter(torch.empty(1, c.dim))

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.x_embedder.weight.dtype

    def _pad(self, tokens: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, int]:
        extra = (-tokens.shape[1]) % self.config.pad_tokens_multiple
        if extra:
            fill = pad.to(device=tokens.device, dtype=tokens.dtype)[None].expand(tokens.shape[0], extra, -1)
            tokens = torch.cat([tokens, fill], dim=1)
        return tokens, extra

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                num_tokens: Any = None, attention_mask: torch.Tensor | None = None,
                transformer_options: dict[str, Any] | None = None, **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        wrappers = extension.get_all_wrappers(extension.WrappersMP.DIFFUSION_MODEL, options)
        return extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timestep, context, num_tokens, attention_mask, options, **kwargs)

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, num_tokens: Any = None,
                 attention_mask: torch.Tensor | None = None, transformer_options: dict[str, Any] | None = None,
                 **kwargs: Any) -> torch.Tensor:
        c, options = self.config, (transformer_options if transformer_options is not None else {})
        dtype, p = self.dtype, c.patch_size
        b, _, h, w = x.shape
        x_in = F.pad(x, (0, (-w) % p, 0, (-h) % p), mode="circular").to(dtype)
        hp, wp = x_in.shape[-2] // p, x_in.shape[-1] // p
        vec = self.t_embedder((1.0 - timestep.to(x.device)) * c.time_scale, dtype)

        cap = self.cap_embedder(context.to(device=x.device, dtype=dtype))
        if c.pad_tokens_multiple is not None:
            cap, _ = self._pad(cap, self.cap_pad_token)
        n_cap = cap.shape[1]
        cap_ids = torch.zeros(1, n_cap, 3, device=x.device)
        cap_ids[..., 0] = torch.arange(n_cap, device=x.device) + 1.0

        img = x_in.view(b, c.in_channels, hp, p, wp, p).permute(0, 2, 4, 3, 5, 1).reshape(b, hp * wp, -1)
        img = self.x_embedder(img)
        img_ids = torch.zeros(hp, wp, 3, device=x.device)
        img_ids[..., 0] = n_cap + 1
        img_ids[..., 1] = torch.arange(hp, device=x.device)[:, None].float()
        img_ids[..., 2] = torch.arange(wp, device=x.device)[None, :].float()
        img_ids = img_ids.reshape(1, -1, 3)
        n_img = img.shape[1]
        if c.pad_tokens_multiple is not None:
            img, extra = self._pad(img, self.x_pad_token)
            img_ids = F.pad(img_ids, (0, 0, 0, extra))

        cap_rope = rope_angles(cap_ids, c.axes_dims, c.rope_theta)[:, :, None]
        img_rope = rope_angles(img_ids, c.axes_dims, c.rope_theta)[:, :, None]
        for layer in self.context_refiner:
            cap = layer(cap, None, cap_rope, None, options)
        patches = options.get("patches", {})
        img_input = img
        for i, layer in enumerate(self.noise_refiner):
            img = layer(img, None, img_rope, vec, options)
            for patch in patches.get("noise_refiner", ()):
                out = patch({"img": img, "img_input": img_input, "txt": cap, "pe": img_rope, "vec": vec, "x": x,
                             "block_index": i, "transformer_options": options, "block_type": "noise_refiner"})
                img = out.get("img", img)

        joint = torch.cat([cap.expand(b, -1, -1), img], dim=1)
        rope = torch.cat([cap_rope, img_rope], dim=1)
        options["total_blocks"] = len(self.layers)
        options["block_type"] = "double"
        joint_input = joint
        for i, layer in enumerate(self.layers):
            options["block_index"] = i
            joint = layer(joint, None, rope, vec, options)
            for patch in patches.get("double_block", ()):
                out = patch({"img": joint[:, n_cap:], "img_input": joint_input[:, n_cap:], "txt": joint[:, :n_cap],
                             "pe": rope[:, n_cap:], "vec": vec, "x": x, "block_index": i,
                             "transformer_options": options})
                if "img" in out:
                    joint[:, n_cap:] = out["img"]
                if "txt" in out:
                    joint[:, :n_cap] = out["txt"]

        out = self.final_layer(joint, vec)[:, n_cap:n_cap + n_img]
        out = out.reshape(b, hp, wp, p, p, c.in_channels).permute(0, 5, 1, 3, 2, 4).reshape(b, c.in_channels,
                                                                                            hp * p, wp * p)
        return -out[..., :h, :w].float()
