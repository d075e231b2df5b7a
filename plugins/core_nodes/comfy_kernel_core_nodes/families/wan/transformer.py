"""Wan 2.1 / 2.2's diffusion transformer: video tokens with self-attention, cross-attention to the text.

The latent video [B, C, T, H, W] is cut into 1x2x2 patches by a 3-d
convolution; every block modulates its inputs by the timestep (six vectors,
added to the block's own ``modulation``), attends over all video tokens with
3-d rotary positions (frame, row, column), then attends to the umt5 text
states (and, in the Wan 2.1 I2V models, separately to the CLIP vision tokens
of the start image, the two results summed). The Wan 2.2 5B model gives every
latent frame its own timestep (frames of the start image stay at 0), so the
modulation is per token there.

Names follow the released weights as ComfyUI loads them (``patch_embedding``,
``blocks.N.self_attn.q``, ``blocks.N.cross_attn.k_img``, ``head.head``,
``img_emb.proj.N``). Blocks call ComfyUI's DiT patch point
``patches_replace["dit"][("double_block", i)]`` with its argument dict
(``img``, ``txt``, ``vec``, ``pe``), and the diffusion-model wrappers.
VACE models add ``vace_blocks`` whose hints are added after chosen blocks;
Fun-Control 2.2 models put a reference image's tokens (``ref_conv``) first;
Fun camera models add their camera embedding, through ``control_adapter``,
to the patch embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
class WanConfig:
    model_type: str = "t2v"
    in_dim: int = 16
    dim: int = 2048
    ffn_dim: int = 8192
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 16
    num_layers: int = 32
    eps: float = 1e-6
    patch_size: tuple[int, int, int] = (1, 2, 2)
    image_embedding: bool = False
    flf_pos_embed_token_number: int | None = None
    vace_layers: int = 0
    vace_in_dim: int = 96
    in_dim_ref_conv: int | None = None
    in_dim_control_adapter: int | None = None

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def axes_dims(self) -> tuple[int, int, int]:
        d = self.head_dim
        return (d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6))


def sinusoidal_embedding(dim: int, position: torch.Tensor) -> torch.Tensor:
    """Cosines then sines of ``position`` at ``dim / 2`` geometric frequencies (Wan's time features)."""
    half = dim // 2
    position = position.float()
    freqs = torch.pow(10000, -torch.arange(half, device=position.device).to(position).div(half))
    angles = torch.outer(position, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def pad_to_patches(x: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """``x`` [B, C, T, H, W] grown to whole patches by wrapping around (circular padding, as ComfyUI pads)."""
    pt, ph, pw = patch
    t, h, w = x.shape[-3:]
    if not ((-t) % pt or (-h) % ph or (-w) % pw):
        return x
    return F.pad(x, (0, (-w) % pw, 0, (-h) % ph, 0, (-t) % pt), mode="circular")


def unpatchify(tokens: torch.Tensor, grid: Any, patch: tuple[int, int, int], size: tuple[int, int, int]
               ) -> torch.Tensor:
    """Head outputs of the video tokens [B, N, p * C] back to a latent [B, C, T, H, W] cut to ``size`` (float32)."""
    b = tokens.shape[0]
    gt, gh, gw = grid
    pt, ph, pw = patch
    out = tokens.view(b, gt, gh, gw, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    out = out.reshape(b, -1, gt * pt, gh * ph, gw * pw)
    t, h, w = size
    return out[:, :, :t, :h, :w].float()


def repeat_over_tokens(e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-frame modulation [B, F, D] spread over the tokens of each frame [B, N, D] (F = 1 broadcasts)."""
    if e.shape[1] <= 1 or e.shape[1] == x.shape[1]:
        return e
    repeats = x.shape[1] // e.shape[1]
    if repeats * e.shape[1] == x.shape[1]:
        return torch.repeat_interleave(e, repeats, dim=1)
    return torch.repeat_interleave(e, repeats + 1, dim=1)[:, : x.shape[1]]


class SelfAttention(nn.Module):
    def __init__(self, c: WanConfig, ops: Any) -> None:
        super().__init__()
        self.heads = c.num_heads
        self.q = ops.Linear(c.dim, c.dim)
        self.k = ops.Linear(c.dim, c.dim)
        self.v = ops.Linear(c.dim, c.dim)
        self.o = ops.Linear(c.dim, c.dim)
        self.norm_q = ops.RMSNorm(c.dim, eps=c.eps)
        self.norm_k = ops.RMSNorm(c.dim, eps=c.eps)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, options: dict[str, Any] | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q = apply_rope(self.norm_q(self.q(x)).view(b, n, self.heads, -1), rope)
        k = apply_rope(self.norm_k(self.k(x)).view(b, n, self.heads, -1), rope)
        out = optimized_attention(q.view(b, n, -1), k.view(b, n, -1), self.v(x), self.heads)
        for patch in (options or {}).get("patches", {}).get("attn1_patch", ()):
            out = patch({"x": out, "q": q, "k": k, "transformer_options": options})
        return self.o(out)


class CrossAttention(nn.Module):
    """Attention to the text; with ``image``, a second attention to the CLIP vision tokens, summed."""

    def __init__(self, c: WanConfig, ops: Any, image: bool) -> None:
        super().__init__()
        self.heads = c.num_heads
        self.q = ops.Linear(c.dim, c.dim)
        self.k = ops.Linear(c.dim, c.dim)
        self.v = ops.Linear(c.dim, c.dim)
        self.o = ops.Linear(c.dim, c.dim)
        self.norm_q = ops.RMSNorm(c.dim, eps=c.eps)
        self.norm_k = ops.RMSNorm(c.dim, eps=c.eps)
        if image:
            self.k_img = ops.Linear(c.dim, c.dim)
            self.v_img = ops.Linear(c.dim, c.dim)
            self.norm_k_img = ops.RMSNorm(c.dim, eps=c.eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor, image_tokens: int | None = None) -> torch.Tensor:
        q = self.norm_q(self.q(x))
        if not hasattr(self, "k_img"):
            return self.o(optimized_attention(q, self.norm_k(self.k(context)), self.v(context), self.heads))
        # without CLIP vision tokens (image_tokens None) both attentions see the whole context, as in ComfyUI
        image, text = context[:, :image_tokens], context[:, image_tokens:]
        out = optimized_attention(q, self.norm_k(self.k(text)), self.v(text), self.heads)
        out = out + optimized_attention(q, self.norm_k_img(self.k_img(image)), self.v_img(image), self.heads)
        return self.o(out)


class WanBlock(nn.Module):
    def __init__(self, c: WanConfig, ops: Any) -> None:
        super().__init__()
        self.norm1 = ops.LayerNorm(c.dim, eps=c.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(c, ops)
        self.norm3 = ops.LayerNorm(c.dim, eps=c.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(c, ops, image=c.image_embedding)
        self.norm2 = ops.LayerNorm(c.dim, eps=c.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(ops.Linear(c.dim, c.ffn_dim), nn.GELU(approximate="tanh"),
                                 ops.Linear(c.ffn_dim, c.dim))
        self.modulation = nn.Parameter(torch.empty(1, 6, c.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor, rope: torch.Tensor, context: torch.Tensor,
                image_tokens: int | None = None, options: dict[str, Any] | None = None) -> torch.Tensor:
        """``options`` (the transformer options) carry ComfyUI's ``attn1_patch`` (after the self-attention,
        before its output layer) and ``attn2_patch`` (after the text cross-attention) patch points."""
        mod = _ops.cast_weight(self, "modulation", x)
        shift1, scale1, gate1, shift2, scale2, gate2 = (
            repeat_over_tokens(m, x) for m in (mod.unsqueeze(0) + e).unbind(2))
        y = self.self_attn(torch.addcmul(shift1, self.norm1(x), 1 + scale1), rope, options)
        x = torch.addcmul(x, y, gate1)
        x = x + self.cross_attn(self.norm3(x), context, image_tokens)
        for patch in (options or {}).get("patches", {}).get("attn2_patch", ()):
            x = patch({"x": x, "transformer_options": options})
        y = self.ffn(torch.addcmul(shift2, self.norm2(x), 1 + scale2))
        return torch.addcmul(x, y, gate2)


class VaceBlock(WanBlock):
    """A block over the VACE control tokens; it emits a hint (``after_proj``) for the main stream."""

    def __init__(self, c: WanConfig, ops: Any, first: bool) -> None:
        super().__init__(c, ops)
        if first:
            self.before_proj = ops.Linear(c.dim, c.dim)
        self.after_proj = ops.Linear(c.dim, c.dim)

    def forward_vace(self, c: torch.Tensor, x: torch.Tensor, e: torch.Tensor, rope: torch.Tensor,
                     context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self, "before_proj"):
            c = self.before_proj(c) + x
        c = super().forward(c, e, rope, context)
        return c, self.after_proj(c)


class Head(nn.Module):
    def __init__(self, c: WanConfig, ops: Any) -> None:
        super().__init__()
        self.norm = ops.LayerNorm(c.dim, eps=c.eps, elementwise_affine=False)
        self.head = ops.Linear(c.dim, math.prod(c.patch_size) * c.out_dim)
        self.modulation = nn.Parameter(torch.empty(1, 2, c.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        mod = _ops.cast_weight(self, "modulation", x)
        shift, scale = (repeat_over_tokens(m, x) for m in (mod.unsqueeze(0) + e.unsqueeze(2)).unbind(2))
        return self.head(torch.addcmul(shift, self.norm(x), 1 + scale))


class ImageProjection(nn.Module):
    """CLIP vision penultimate states (1280 wide) to the model width; FLF models add a position table."""

    def __init__(self, c: WanConfig, ops: Any) -> None:
        super().__init__()
        self.proj = nn.Sequential(ops.LayerNorm(1280), ops.Linear(1280, 1280), nn.GELU(),
                                  ops.Linear(1280, c.dim), ops.LayerNorm(c.dim))
        if c.flf_pos_embed_token_number is not None:
            self.emb_pos = nn.Parameter(torch.empty(1, c.flf_pos_embed_token_number, 1280))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "emb_pos"):
            n = features.shape[1]
            features = features[:, : self.emb_pos.shape[1]] + _ops.cast_weight(self, "emb_pos", features)[:, :n]
        return self.proj(features)


class CameraResidualBlock(nn.Module):
    def __init__(self, dim: int, ops: Any) -> None:
        super().__init__()
        self.conv1 = ops.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.conv2 = ops.Conv2d(dim, dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class CameraAdapter(nn.Module):
    """Plücker embeddings [B, 24, T, H, W] at pixel size to patch features [B, dim, T, H / 16, W / 16].

    Each frame's 8x8 pixel blocks become channels (pixel unshuffle), a
    patch-sized convolution brings them to the model width, one residual
    block follows; the result is added to the video's patch embeddings.
    """

    def __init__(self, in_dim: int, dim: int, patch: tuple[int, int], ops: Any) -> None:
        super().__init__()
        self.conv = ops.Conv2d(in_dim * 64, dim, kernel_size=patch, stride=patch)
        self.residual_blocks = nn.Sequential(CameraResidualBlock(dim, ops))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        x = F.pixel_unshuffle(x.transpose(1, 2).reshape(b * t, c, h, w), 8)
        x = self.residual_blocks(self.conv(x))
        return x.view(b, t, *x.shape[1:]).transpose(1, 2)


class WanTransformer(nn.Module):
    """``forward(x [B, C, T, H, W], timestep, context [B, L, 4096], clip_fea=...)`` -> velocity like ``x``."""

    #: the block type (variants add inputs to the blocks)
    block_class: type[WanBlock] = WanBlock

    def __init__(self, config: WanConfig, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.compute_dtype = compute_dtype
        self.patch_size = c.patch_size
        self.dim = c.dim
        self.patch_embedding = ops.Conv3d(c.in_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.text_embedding = nn.Sequential(ops.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"),
                                            ops.Linear(c.dim, c.dim))
        self.time_embedding = nn.Sequential(ops.Linear(c.freq_dim, c.dim), nn.SiLU(), ops.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(c.dim, c.dim * 6))
        self.blocks = nn.ModuleList([self.block_class(c, ops) for _ in range(c.num_layers)])
        self.head = Head(c, ops)
        if c.image_embedding:
            self.img_emb = ImageProjection(c, ops)
        if c.in_dim_ref_conv is not None:  # Fun-Control 2.2: a reference image's tokens before the video's
            self.ref_conv = ops.Conv2d(c.in_dim_ref_conv, c.dim, kernel_size=c.patch_size[1:],
                                       stride=c.patch_size[1:])
        if c.in_dim_control_adapter is not None:
            self.control_adapter = CameraAdapter(c.in_dim_control_adapter, c.dim, c.patch_size[1:], ops)
        if c.model_type == "vace":
            self.vace_layers_mapping = {i: n for n, i in enumerate(range(0, c.num_layers, c.num_layers // c.vace_layers))}
            self.vace_blocks = nn.ModuleList([VaceBlock(c, ops, i == 0) for i in range(c.vace_layers)])
            self.vace_patch_embedding = ops.Conv3d(c.vace_in_dim, c.dim, kernel_size=c.patch_size,
                                                   stride=c.patch_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.head.head.weight.dtype

    def rope(self, t: int, h: int, w: int, device: Any,
             rope_options: dict[str, float] | None = None, t_start: int = 0) -> torch.Tensor:
        """Rotations [1, N, 1, D/2, 2, 2] of the patch grid (frame from ``t_start``, row, column from 0).

        ``rope_options`` (ScaleROPE) moves the positions along each axis to
        shift + index * scale (t: frames, y: rows, x: columns).
        """
        pt, ph, pw = self.patch_size
        grid = torch.stack(torch.meshgrid(torch.arange((t + pt // 2) // pt), torch.arange((h + ph // 2) // ph),
                                          torch.arange((w + pw // 2) // pw), indexing="ij"), dim=-1)
        ids = grid.reshape(1, -1, 3).to(device=device, dtype=torch.float32)
        if t_start:
            ids[..., 0] += t_start
        if rope_options:
            axes = ("t", "y", "x")
            scale = torch.tensor([rope_options.get(f"scale_{a}", 1.0) for a in axes], device=device)
            shift = torch.tensor([rope_options.get(f"shift_{a}", 0.0) for a in axes], device=device)
            ids = ids * scale + shift
        return rope_angles(ids, self.config.axes_dims).unsqueeze(2)

    def time_modulation(self, timestep: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(the head's embedding [B, steps, dim], the blocks' six modulations [B, steps, 6, dim]) of ``timestep``
        ([B], or [B, steps] for per-frame / per-token timesteps)."""
        e = self.time_embedding(sinusoidal_embedding(self.config.freq_dim, timestep.flatten()).to(dtype))
        e = e.reshape(timestep.shape[0], -1, e.shape[-1])
        return e, self.time_projection(e).unflatten(2, (6, self.dim))

    def run_blocks(self, tokens: torch.Tensor, e0: torch.Tensor, rope: torch.Tensor, context: torch.Tensor,
                   options: dict[str, Any], extra: tuple[Any, ...] = (),
                   after: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Every block in turn, each replaceable through ``patches_replace["dit"][("double_block", i)]``; blocks
        take ``extra`` after the text, and ``after(i, tokens)`` (a variant's injection) follows block ``i``."""
        replace = options.get("patches_replace", {}).get("dit", {})
        if self.block_class is WanBlock:  # its attn1_patch / attn2_patch points read the options
            extra = (extra[0] if extra else None, options)
        options["total_blocks"] = len(self.blocks)
        options["block_type"] = "double"
        for i, block in enumerate(self.blocks):
            options["block_index"] = i
            if ("double_block", i) in replace:
                def original(args: dict[str, Any], block: nn.Module = block) -> dict[str, torch.Tensor]:
                    return {"img": block(args["img"], args["vec"], args["pe"], args["txt"], *extra)}

                tokens = replace[("double_block", i)]({"img": tokens, "txt": context, "vec": e0, "pe": rope,
                                                       "transformer_options": options},
                                                      {"original_block": original})["img"]
            else:
                tokens = block(tokens, e0, rope, context, *extra)
            if after is not None:
                tokens = after(i, tokens)
        return tokens

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                clip_fea: torch.Tensor | None = None, transformer_options: dict[str, Any] | None = None,
                **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        wrappers = extension.get_all_wrappers(extension.WrappersMP.DIFFUSION_MODEL, options)
        return extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timestep, context, clip_fea, options, **kwargs)

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                 clip_fea: torch.Tensor | None = None, transformer_options: dict[str, Any] | None = None,
                 vace_context: torch.Tensor | None = None, vace_strength: Any = None,
                 reference_latent: torch.Tensor | None = None, camera_conditions: torch.Tensor | None = None,
                 time_dim_concat: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        dtype = self.dtype
        b, _, t, h, w = x.shape
        pt, ph, pw = self.patch_size
        x = pad_to_patches(x, self.patch_size)
        frames = t
        if time_dim_concat is not None:  # Phantom: the subject images' latents as frames after the video's
            x = torch.cat([x, pad_to_patches(time_dim_concat.to(x), self.patch_size)], dim=2)
            frames = x.shape[2]
        if not hasattr(self, "ref_conv"):
            reference_latent = None
        rope = self.rope(frames + (reference_latent is not None), h, w, x.device, options.get("rope_options"))

        tokens = self.patch_embedding(x.to(dtype))
        if camera_conditions is not None and hasattr(self, "control_adapter"):
            tokens = tokens + self.control_adapter(camera_conditions.to(device=x.device, dtype=dtype))
        grid = tokens.shape[2:]
        options["grid_sizes"] = grid
        tokens = tokens.flatten(2).transpose(1, 2)
        n_ref = 0
        if reference_latent is not None:
            ref = self.ref_conv(reference_latent.to(device=x.device, dtype=dtype)).flatten(2).transpose(1, 2)
            n_ref = ref.shape[1]
            tokens = torch.cat([ref, tokens], dim=1)
        e, e0 = self.time_modulation(timestep.to(x.device), dtype)

        context = self.text_embedding(context.to(dtype))
        image_tokens = None
        if clip_fea is not None:
            if hasattr(self, "img_emb"):
                context = torch.cat([self.img_emb(clip_fea.to(dtype)), context], dim=1)
            image_tokens = clip_fea.shape[-2]

        controls: list[torch.Tensor] = []
        strengths: list[float] = []
        if vace_context is not None and hasattr(self, "vace_blocks"):
            strengths = list(vace_strength) if vace_strength is not None else [1.0] * vace_context.shape[1]
            for j in range(vace_context.shape[1]):
                c = self.vace_patch_embedding(F.pad(vace_context[:, j].to(dtype),
                                                    (0, (-w) % pw, 0, (-h) % ph, 0, (-t) % pt)))
                controls.append(c.flatten(2).transpose(1, 2))
        patch_tokens = tokens

        def vace_hints(i: int, tokens: torch.Tensor) -> torch.Tensor:
            index = self.vace_layers_mapping.get(i) if controls else None
            if index is not None:
                for j, c in enumerate(controls):
                    controls[j], hint = self.vace_blocks[index].forward_vace(c, patch_tokens, e0, rope, context)
                    tokens = tokens + hint * strengths[j]
            return tokens

        tokens = self.run_blocks(tokens, e0, rope, context, options, (image_tokens,), vace_hints)
        return unpatchify(self.head(tokens, e)[:, n_ref:], grid, self.patch_size, (t, h, w))
