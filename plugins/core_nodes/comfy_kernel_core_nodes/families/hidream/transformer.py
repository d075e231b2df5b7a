"""HiDream-I1 / E1's diffusion transformer: a mixture-of-experts DiT fed by four text encoders.

The latent is cut into 2x2 patches. A conditioning vector (timestep embedding
plus the embedded CLIP-L/G pooled vector) modulates every block. The text side
is T5's states and, per block, one of Llama 3.1's hidden states (each block has
its own projection of its own layer): the double-stream blocks keep separate
weights for image and text tokens and attend over
``[image, T5 + last Llama state, this block's Llama state]``; the
single-stream blocks run image and text as one sequence, a fresh Llama state
appended each time and dropped after. Queries and keys are RMS-normed over the
whole width (not per head) and rotated by (row, column) positions; text
positions are all zero. Feed-forwards are SwiGLU; the image side routes each
token to the two best of four experts by a softmax gate, beside a shared expert.

Names follow the released weights as ComfyUI loads them
(``double_stream_blocks.N.block.attn1.to_q``, ``...ff_i.experts.E.w1``,
``caption_projection.N.linear``, ``final_layer.adaLN_modulation.1``). As in
ComfyUI the network returns the negated velocity, and the E1 edit models get
the input image's latent beside the noise along the width (``image_cond``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...components.rope import apply_rope, rope_angles
from ...model import extension
from ...model import ops as _ops
from ...model.attention import optimized_attention


def full_llama_layers(blocks: int = 48, states: int = 32) -> tuple[int, ...]:
    """Which Llama hidden state each block reads: block i the state i, the last state for the rest."""
    return tuple(min(i, states - 1) for i in range(blocks))


@dataclass(frozen=True)
class HiDreamConfig:
    in_channels: int = 16
    out_channels: int = 16
    patch_size: int = 2
    num_layers: int = 16
    num_single_layers: int = 32
    attention_head_dim: int = 128
    num_attention_heads: int = 20
    t5_channels: int = 4096
    llama_channels: int = 4096
    text_emb_dim: int = 2048
    num_routed_experts: int = 4
    num_activated_experts: int = 2
    axes_dims_rope: tuple[int, ...] = (64, 32, 32)
    llama_layers: tuple[int, ...] = field(default_factory=full_llama_layers)

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


def swiglu_width(hidden: int, multiple_of: int = 256) -> int:
    """The SwiGLU inner width for a nominal ``hidden``: two thirds, rounded up to ``multiple_of``."""
    width = int(2 * hidden / 3)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


def timestep_features(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """Cosines then sines of ``t`` at ``dim / 2`` geometric frequencies (period 1 .. 10000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TwoLayerEmbed(nn.Module):
    """Linear, SiLU, linear (``linear_1`` / ``linear_2``): embeds the timestep features or the pooled vector."""

    def __init__(self, in_dim: int, dim: int, ops: Any) -> None:
        super().__init__()
        self.linear_1 = ops.Linear(in_dim, dim)
        self.linear_2 = ops.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepEmbed(nn.Module):
    def __init__(self, dim: int, ops: Any) -> None:
        super().__init__()
        self.timestep_embedder = TwoLayerEmbed(256, dim, ops)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.timestep_embedder(timestep_features(t).to(dtype))


class PooledEmbed(nn.Module):
    def __init__(self, in_dim: int, dim: int, ops: Any) -> None:
        super().__init__()
        self.pooled_embedder = TwoLayerEmbed(in_dim, dim, ops)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.pooled_embedder(pooled)


class PatchEmbed(nn.Module):
    def __init__(self, in_dim: int, dim: int, ops: Any) -> None:
        super().__init__()
        self.proj = ops.Linear(in_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class TextProjection(nn.Module):
    def __init__(self, in_dim: int, dim: int, ops: Any) -> None:
        super().__init__()
        self.linear = ops.Linear(in_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, ops: Any) -> None:
        super().__init__()
        width = swiglu_width(hidden)
        self.w1 = ops.Linear(dim, width, bias=False)
        self.w2 = ops.Linear(width, dim, bias=False)
        self.w3 = ops.Linear(dim, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ExpertGate(nn.Module):
    """Softmax scores over the experts; each token keeps its ``top_k`` best with their raw scores."""

    decodes_packed = True  # its weight is read through ops.cast_weight

    def __init__(self, dim: int, experts: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.weight = nn.Parameter(torch.empty(experts, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = _ops.cast_weight(self, "weight", x)  # scale_weight (scaled fp8), packed layers decoded
        scores = F.linear(x, weight).softmax(dim=-1)
        top_weight, top_index = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
        return top_index, top_weight


class MoESwiGLU(nn.Module):
    """A shared SwiGLU expert plus the gate-weighted sum of each token's chosen routed experts."""

    def __init__(self, dim: int, hidden: int, experts: int, top_k: int, ops: Any) -> None:
        super().__init__()
        self.shared_experts = SwiGLU(dim, hidden // 2, ops)
        self.experts = nn.ModuleList([SwiGLU(dim, hidden, ops) for _ in range(experts)])
        self.gate = ExpertGate(dim, experts, top_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        index, weight = self.gate(flat)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = torch.nonzero(index == e, as_tuple=True)
            if token.numel() == 0:
                continue
            routed = expert(flat[token]) * weight[token, slot, None].to(flat.dtype)
            out.index_add_(0, token, routed.to(out.dtype))
        return out.view(shape) + self.shared_experts(x)


class HiDreamAttention(nn.Module):
    """Self-attention over image tokens, or (double-stream) over image and text with per-stream weights."""

    def __init__(self, dim: int, heads: int, head_dim: int, single: bool, ops: Any) -> None:
        super().__init__()
        self.heads = heads
        self.single = single
        inner = heads * head_dim
        self.to_q, self.to_k, self.to_v = ops.Linear(dim, inner), ops.Linear(inner, inner), ops.Linear(inner, inner)
        self.to_out = ops.Linear(inner, dim)
        self.q_rms_norm = ops.RMSNorm(inner, eps=1e-5)
        self.k_rms_norm = ops.RMSNorm(inner, eps=1e-5)
        if not single:
            self.to_q_t, self.to_k_t = ops.Linear(dim, inner), ops.Linear(inner, inner)
            self.to_v_t, self.to_out_t = ops.Linear(inner, inner), ops.Linear(inner, dim)
            self.q_rms_norm_t = ops.RMSNorm(inner, eps=1e-5)
            self.k_rms_norm_t = ops.RMSNorm(inner, eps=1e-5)

    def _qkv(self, x: torch.Tensor, suffix: str) -> tuple[torch.Tensor, ...]:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (self.heads, -1))

        q = getattr(self, "q_rms_norm" + suffix)(getattr(self, "to_q" + suffix)(x)).to(x.dtype)
        k = getattr(self, "k_rms_norm" + suffix)(getattr(self, "to_k" + suffix)(x)).to(x.dtype)
        return heads(q), heads(k), heads(getattr(self, "to_v" + suffix)(x))

    def forward(self, img: torch.Tensor, txt: torch.Tensor | None, rope: torch.Tensor,
                transformer_options: dict[str, Any]) -> Any:
        q, k, v = self._qkv(img, "")
        if not self.single:
            qt, kt, vt = self._qkv(txt, "_t")
            q, k, v = torch.cat([q, qt], dim=1), torch.cat([k, kt], dim=1), torch.cat([v, vt], dim=1)
        half = rope.shape[-3] * 2
        if q.shape[-1] == half:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        else:  # only the first part of each head carries positions
            q = torch.cat([apply_rope(q[..., :half], rope), q[..., half:]], dim=-1)
            k = torch.cat([apply_rope(k[..., :half], rope), k[..., half:]], dim=-1)
        out = optimized_attention(q.flatten(2), k.flatten(2), v.flatten(2), self.heads,
                                  transformer_options=transformer_options)
        if self.single:
            return self.to_out(out)
        n_img = img.shape[1]
        return self.to_out(out[:, :n_img]), self.to_out_t(out[:, n_img:])


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


class DoubleStreamBlock(nn.Module):
    def __init__(self, c: HiDreamConfig, ops: Any) -> None:
        super().__init__()
        dim = c.inner_dim
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(dim, 12 * dim))
        self.attn1 = HiDreamAttention(dim, c.num_attention_heads, c.attention_head_dim, False, ops)
        self.ff_i = MoESwiGLU(dim, 4 * dim, c.num_routed_experts, c.num_activated_experts, ops)
        self.ff_t = SwiGLU(dim, 4 * dim, ops)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, rope: torch.Tensor,
                transformer_options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        (shift_a, scale_a, gate_a, shift_f, scale_f, gate_f,
         shift_at, scale_at, gate_at, shift_ft, scale_ft, gate_ft) = self.adaLN_modulation(vec)[:, None].chunk(12, -1)
        img_in = _layer_norm(img) * (1 + scale_a) + shift_a
        txt_in = _layer_norm(txt) * (1 + scale_at) + shift_at
        img_attn, txt_attn = self.attn1(img_in, txt_in, rope, transformer_options)
        img = gate_a * img_attn + img
        txt = gate_at * txt_attn + txt
        img = gate_f * self.ff_i(_layer_norm(img) * (1 + scale_f) + shift_f) + img
        txt = gate_ft * self.ff_t(_layer_norm(txt) * (1 + scale_ft) + shift_ft) + txt
        return img, txt


class SingleStreamBlock(nn.Module):
    def __init__(self, c: HiDreamConfig, ops: Any) -> None:
        super().__init__()
        dim = c.inner_dim
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(dim, 6 * dim))
        self.attn1 = HiDreamAttention(dim, c.num_attention_heads, c.attention_head_dim, True, ops)
        self.ff_i = MoESwiGLU(dim, 4 * dim, c.num_routed_experts, c.num_activated_experts, ops)

    def forward(self, x: torch.Tensor, vec: torch.Tensor, rope: torch.Tensor,
                transformer_options: dict[str, Any]) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.adaLN_modulation(vec)[:, None].chunk(6, -1)
        x = gate_a * self.attn1(_layer_norm(x) * (1 + scale_a) + shift_a, None, rope, transformer_options) + x
        return gate_f * self.ff_i(_layer_norm(x) * (1 + scale_f) + shift_f) + x


class BlockHolder(nn.Module):
    """The released weights keep each block one level down (``double_stream_blocks.N.block.``)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int, ops: Any) -> None:
        super().__init__()
        self.linear = ops.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        return self.linear(_layer_norm(x) * (1 + scale[:, None]) + shift[:, None])


class HiDreamTransformer(nn.Module):
    """``forward(x [B, 16, H, W], t (sigma * 1000), y (pooled), context (T5), encoder_hidden_states_llama3)``."""

    def __init__(self, config: HiDreamConfig, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.compute_dtype = compute_dtype
        dim, p = c.inner_dim, c.patch_size
        self.t_embedder = TimestepEmbed(dim, ops)
        self.p_embedder = PooledEmbed(c.text_emb_dim, dim, ops)
        self.x_embedder = PatchEmbed(c.in_channels * p * p, dim, ops)
        self.double_stream_blocks = nn.ModuleList(
            [BlockHolder(DoubleStreamBlock(c, ops)) for _ in range(c.num_layers)])
        self.single_stream_blocks = nn.ModuleList(
            [BlockHolder(SingleStreamBlock(c, ops)) for _ in range(c.num_single_layers)])
        self.final_layer = FinalLayer(dim, p * p * c.out_channels, ops)
        channels = [c.llama_channels] * (c.num_layers + c.num_single_layers) + [c.t5_channels]
        self.caption_projection = nn.ModuleList([TextProjection(ch, dim, ops) for ch in channels])

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.x_embedder.proj.weight.dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None, encoder_hidden_states_llama3: torch.Tensor | None = None,
                image_cond: torch.Tensor | None = None, control: Any = None,
                transformer_options: dict[str, Any] | None = None, **kwargs: Any) -> torch.Tensor:
        options = transformer_options if transformer_options is not None else {}
        wrappers = extension.get_all_wrappers(extension.WrappersMP.DIFFUSION_MODEL, options)
        return extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, t, y, context, encoder_hidden_states_llama3, image_cond, control, options)

    def _text_states(self, context: torch.Tensor, llama: torch.Tensor, batch: int) -> list[torch.Tensor]:
        """Projected Llama states, one per block, then the projected T5 states (last)."""
        layers = llama.movedim(1, 0)  # [states, B, L, D]
        out = []
        for i, index in enumerate(self.config.llama_layers):
            state = layers[min(index, layers.shape[0] - 1)]
            out.append(self.caption_projection[i](state.to(self.dtype)).view(batch, -1, self.config.inner_dim))
        t5 = self.caption_projection[-1](context.to(self.dtype)).view(batch, -1, self.config.inner_dim)
        return out + [t5]

    def _forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, context: torch.Tensor | None,
                 llama: torch.Tensor | None, image_cond: torch.Tensor | None, control: Any,
                 options: dict[str, Any]) -> torch.Tensor:
        if llama is None or context is None or y is None:
            raise ValueError("HiDream needs the conditioning of its own text encoders (T5 states, Llama states and "
                             "the pooled CLIP vector): load them with QuadrupleCLIPLoader or a 'hidream' CLIP type")
        c, p, dtype = self.config, self.config.patch_size, self.dtype
        b, _, h, w = x.shape
        if image_cond is not None:
            x = torch.cat([x, image_cond.to(x)], dim=-1)
        x = F.pad(x, (0, (-x.shape[-1]) % p, 0, (-x.shape[-2]) % p), mode="circular")
        hp, wp = x.shape[-2] // p, x.shape[-1] // p
        img = x.view(b, -1, hp, p, wp, p).permute(0, 2, 4, 3, 5, 1).reshape(b, hp * wp, -1)

        t = t.reshape(-1).to(x.device)
        t = t.expand(b) if t.numel() == 1 else t
        vec = self.t_embedder(t, dtype) + self.p_embedder(y.to(device=x.device, dtype=dtype))
        img = self.x_embedder(img.to(dtype))

        states = self._text_states(context.to(x.device), llama.to(x.device), b)
        ids = torch.zeros(hp, wp, 3, device=x.device)
        ids[..., 1] = torch.arange(hp, device=x.device)[:, None]
        ids[..., 2] = torch.arange(wp, device=x.device)[None, :]
        n_txt = states[-1].shape[1] + 2 * states[0].shape[1]
        ids = torch.cat([ids.reshape(1, -1, 3), torch.zeros(1, n_txt, 3, device=x.device)], dim=1)
        rope = rope_angles(ids.expand(b, -1, -1), c.axes_dims_rope).unsqueeze(2)

        initial = torch.cat([states[-1], states[-2]], dim=1)
        n_initial = initial.shape[1]
        for i, holder in enumerate(self.double_stream_blocks):
            txt = torch.cat([initial, states[i]], dim=1)
            img, txt = holder.block(img, txt, vec, rope, options)
            initial = txt[:, :n_initial]
        n_img = img.shape[1]
        joint = torch.cat([img, initial], dim=1)
        n_joint = joint.shape[1]
        for j, holder in enumerate(self.single_stream_blocks):
            joint = torch.cat([joint, states[c.num_layers + j]], dim=1)
            joint = holder.block(joint, vec, rope, options)[:, :n_joint]

        out = self.final_layer(joint[:, :n_img], vec)
        out = out.view(b, hp, wp, p, p, c.out_channels).permute(0, 5, 1, 3, 2, 4).reshape(b, -1, hp * p, wp * p)
        return -out[:, :, :h, :w].float()
