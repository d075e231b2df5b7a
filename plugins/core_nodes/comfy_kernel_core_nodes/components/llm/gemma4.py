"""Gemma 4's language model: the 12B "unified" text stack as a text encoder, and the dense
E2B/E4B stack (LTX-2.5's prompt enhancer) as a text generator.

What sets it apart from Gemma 3 (decoder.py):

* two kinds of layer, as in Gemma 3, but each with its own head width and
  key/value head count: sliding-window layers (256-wide heads, rotary base
  10 000) and global ones (512-wide heads, "proportional" rotary: only the
  first quarter of each head rotates, base 1 000 000, the rest passes);
* RMS norms multiply by their weight (Gemma 3 by 1 + weight); values get an
  RMS norm of their own without a weight; scores are not scaled (the
  query/key norms set their size);
* a global layer may take its values from the key projection (``k_eq_v``:
  no ``v_proj``), the last ``kv_shared`` layers reuse the keys and values of
  the last earlier layer of their kind (and may have a feed-forward twice as
  wide), and each layer's output is multiplied by a stored ``layer_scalar``.

The small dense models add per-layer inputs: every layer gets a narrow
vector of its own per token, the mean (times sqrt 2) of a token embedding
from a second table (``embed_tokens_per_layer``, all layers' slices side by
side) and a normed projection of the main embedding; after its feed-forward
the layer gates that vector by its state, projects it back up, norms it and
adds it. The text encoders and the generation loop hand the network
embeddings, not ids, so :meth:`Gemma4LM.embed` returns both tables' rows in
one tensor (see there). Mixture-of-experts layers (26B-A4B) are not built.

Names are ComfyUI's flattened ones (``model.layers.0.self_attn.q_proj.weight``,
``model.embed_tokens.weight``, ``model.norm.weight``); Hugging Face's
``model.language_model.*`` maps onto them by dropping ``language_model.``
(:func:`rename`, :func:`language_model_weights`). The settings come from
the Hugging Face config the files carry (:meth:`Gemma4Config.from_hf`) or,
without one, from the tensor shapes (:func:`config_from_shapes`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ...model import ops as _ops

SLIDING, FULL = "sliding_attention", "full_attention"
HF_PREFIX, PREFIX = "model.language_model.", "model."
#: what the language model's keys start with after the prefix
LM_PARTS = frozenset({"embed_tokens", "embed_tokens_per_layer", "per_layer_model_projection",
                      "per_layer_projection_norm", "layers", "norm"})
#: Gemma 4's next-token soft cap (every released checkpoint), assumed when only the shapes are known
FINAL_SOFTCAP = 30.0

T = TypeVar("T")
KV = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Gemma4Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    layer_types: tuple[str, ...]
    head_dim: int = 256
    global_head_dim: int = 512
    num_kv_heads: int = 8
    num_global_kv_heads: int | None = None
    sliding_window: int = 1024
    rope_theta: float = 10_000.0
    global_rope_theta: float = 1_000_000.0
    global_rotary_fraction: float = 0.25
    k_eq_v: bool = False
    kv_shared: int = 0
    double_wide_mlp: bool = False
    rms_norm_eps: float = 1e-6
    #: width of each layer's per-token input (0: none, as in the 12B)
    per_layer_width: int = 0
    #: rows of the per-layer token table
    per_layer_vocab_size: int = 262_144
    #: next-token scores become cap * tanh(score / cap)
    final_softcap: float | None = None
    #: an output projection of its own (``lm_head.weight``); otherwise the token embeddings
    lm_head: bool = False

    @property
    def num_layers(self) -> int:
        return len(self.layer_types)

    def head(self, i: int) -> tuple[int, int]:
        """(head width, key/value heads) of layer ``i``."""
        if self.layer_types[i] == FULL:
            return self.global_head_dim, self.num_global_kv_heads or self.num_kv_heads
        return self.head_dim, self.num_kv_heads

    def shared(self, i: int) -> bool:
        return i >= self.num_layers - self.kv_shared

    def source(self, i: int) -> int:
        """The layer whose keys and values layer ``i`` uses (itself unless it is shared)."""
        if not self.shared(i):
            return i
        first = self.num_layers - self.kv_shared
        return max(j for j in range(first) if self.layer_types[j] == self.layer_types[i])

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> Gemma4Config:
        """From a Hugging Face ``gemma4`` / ``gemma4_text`` / ``gemma4_unified`` dict (or its ``text_config``)."""
        c = config.get("text_config", config)
        if c.get("enable_moe_block"):
            raise ValueError("Gemma 4 with mixture-of-experts layers (enable_moe_block) is not supported")
        rope = c.get("rope_parameters") or {}
        full = rope.get(FULL) or {}
        layers = c.get("num_hidden_layers", 30)
        types = c.get("layer_types") or [SLIDING if (i + 1) % 6 else FULL for i in range(layers)]
        per_layer = c.get("per_layer_config") or {}
        global_head = c.get("global_head_dim")
        global_kv = c.get("num_global_key_value_heads")
        for index, override in per_layer.items():
            if types[int(index)] == FULL:
                global_head = override.get("head_dim", global_head)
                global_kv = override.get("num_key_value_heads", global_kv)
        k_eq_v = bool(c.get("attention_k_eq_v", False))
        dense = c.get("model_type") == "gemma4_text"  # Hugging Face's defaults for the keys a dict may leave out
        tied = config.get("tie_word_embeddings", c.get("tie_word_embeddings", True))
        return cls(vocab_size=c.get("vocab_size", 262_144), hidden_size=c["hidden_size"],
                   intermediate_size=c["intermediate_size"], num_heads=c["num_attention_heads"],
                   layer_types=tuple(types), head_dim=c.get("head_dim", 256), global_head_dim=global_head or 512,
                   num_kv_heads=c.get("num_key_value_heads", 8), num_global_kv_heads=global_kv if k_eq_v else None,
                   sliding_window=c.get("sliding_window", 512 if dense else 1024),
                   rope_theta=(rope.get(SLIDING) or {}).get("rope_theta", 10_000.0),
                   global_rope_theta=full.get("rope_theta", 1_000_000.0),
                   global_rotary_fraction=full.get("partial_rotary_factor", 0.25)
                   if full.get("rope_type", "proportional") == "proportional" else 1.0,
                   k_eq_v=k_eq_v, kv_shared=c.get("num_kv_shared_layers", 0),
                   double_wide_mlp=bool(c.get("use_double_wide_mlp", False)), rms_norm_eps=c.get("rms_norm_eps", 1e-6),
                   per_layer_width=c.get("hidden_size_per_layer_input", 256 if dense else 0) or 0,
                   per_layer_vocab_size=c.get("vocab_size_per_layer_input", 262_144),
                   final_softcap=c.get("final_logit_softcapping"), lm_head=not tied)


def language_model_prefix(shapes: Mapping[str, Any]) -> str | None:
    """Where a Gemma 4 language model's keys start (``model.`` for ComfyUI's files, ``model.language_model.``
    for Hugging Face's), or None when ``shapes`` holds none.

    Gemma 4 is told from Gemma 3 (and 3n) by its ``layer_scalar`` tensors; the vision tower's layers have
    none, and the prefix must also hold the token embeddings and per-head query norms.
    """
    tail = "layers.0.layer_scalar"
    found = sorted(k[:-len(tail)] for k in shapes if k.endswith(tail))
    for prefix in found:
        if prefix + "embed_tokens.weight" in shapes and prefix + "layers.0.self_attn.q_norm.weight" in shapes \
                and not any(k.startswith(prefix + "altup") for k in shapes):
            return prefix
    return None


def is_gemma4(shapes: Mapping[str, Any]) -> bool:
    """Whether the keys hold a Gemma 4 language model (either layout)."""
    return language_model_prefix(shapes) is not None


def rename(key: str, prefix: str | None = None) -> str | None:
    """The module's name for a file's key: ``prefix + X`` -> ``model.X`` for the language model's parts,
    ``lm_head.*`` as it is, None for anything else (towers, projectors, heads of other networks).

    ``prefix``: from :func:`language_model_prefix`; by default Hugging Face's for keys under it, else ComfyUI's.
    """
    if prefix is None:
        prefix = HF_PREFIX if key.startswith(HF_PREFIX) else PREFIX
    if key.startswith("lm_head."):
        return key
    if not key.startswith(prefix) or key[len(prefix):].split(".", 1)[0] not in LM_PARTS:
        return None
    return PREFIX + key[len(prefix):]


def language_model_weights(state_dict: Mapping[str, T]) -> dict[str, T]:
    """The language model's entries of a file (either layout; towers and projectors of a multimodal file
    left out), named as :class:`Gemma4LM` names them."""
    prefix = language_model_prefix(state_dict)
    if prefix is None:
        raise ValueError("no Gemma 4 language model in these weights")
    return {name: v for k, v in state_dict.items() if (name := rename(k, prefix)) is not None}


def config_from_shapes(shapes: Mapping[str, tuple[int, ...]], prefix: str | None = None) -> Gemma4Config:
    """The settings a file without its config implies: layer kinds from the head widths, sharing from the
    missing key projections, per-layer inputs from their table; rotary bases, fraction, soft cap and window
    are Gemma 4's (window 512 for the models with per-layer inputs, E2B/E4B, else 1024).

    ``prefix``: where the language model's keys start (found by :func:`language_model_prefix` when None).
    """
    if prefix is None:
        prefix = language_model_prefix(shapes) or PREFIX
    if any(k.startswith(prefix) and (".experts." in k or ".router." in k) for k in shapes):
        raise ValueError("Gemma 4 with mixture-of-experts layers is not supported")
    layers = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"layers\.(\d+)\.", k)))
    widths = [int(shapes[f"{prefix}layers.{i}.self_attn.q_norm.weight"][0]) for i in range(layers)]
    if len(set(widths)) > 1:
        types = tuple(FULL if w == max(widths) else SLIDING for w in widths)
    else:  # one width: Gemma 4's pattern, five sliding layers to a global one, the last global
        types = tuple(SLIDING if (i + 1) % 6 and i < layers - 1 else FULL for i in range(layers))
    local = min(widths)
    hidden = int(shapes[prefix + "embed_tokens.weight"][1])
    owners = [i for i in range(layers) if f"{prefix}layers.{i}.self_attn.k_proj.weight" in shapes]
    kv = {t: int(shapes[f"{prefix}layers.{i}.self_attn.k_proj.weight"][0]) // widths[i]
          for i in owners for t in [types[i]]}
    full = [i for i in owners if types[i] == FULL]
    k_eq_v = bool(full) and f"{prefix}layers.{full[0]}.self_attn.v_proj.weight" not in shapes
    mlp = [int(shapes[f"{prefix}layers.{i}.mlp.gate_proj.weight"][0]) for i in range(layers)]
    per_layer = shapes.get(prefix + "embed_tokens_per_layer.weight")
    extra: dict[str, Any] = {}
    if per_layer is not None:
        extra = {"per_layer_width": int(per_layer[1]) // layers, "per_layer_vocab_size": int(per_layer[0]),
                 "sliding_window": 512}
    return Gemma4Config(
        vocab_size=int(shapes[prefix + "embed_tokens.weight"][0]), hidden_size=hidden, intermediate_size=mlp[0],
        num_heads=int(shapes[f"{prefix}layers.0.self_attn.q_proj.weight"][0]) // widths[0], layer_types=types,
        head_dim=local, global_head_dim=max(widths), num_kv_heads=kv.get(SLIDING, kv.get(FULL, 1)),
        num_global_kv_heads=kv.get(FULL) if k_eq_v else None, k_eq_v=k_eq_v, kv_shared=layers - len(owners),
        double_wide_mlp=mlp[-1] != mlp[0], final_softcap=FINAL_SOFTCAP, lm_head="lm_head.weight" in shapes,
        **extra)


class RMSNorm(nn.Module):
    """Computed in float32, multiplied by the weight (none for the value norm)."""

    def __init__(self, dim: int, eps: float, scale: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.pow(h.pow(2).mean(-1, keepdim=True) + self.eps, -0.5)
        if self.weight is not None:
            h = h * self.weight.float().to(h.device)
        return h.to(x.dtype)


def rotary_tables(c: Gemma4Config, kind: str, positions: torch.Tensor, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [..., L, head width] of one layer kind for positions [..., L]; the global layers' unrotated
    tail has cos 1, sin 0."""
    if kind == FULL:
        dim, theta, fraction = c.global_head_dim, c.global_rope_theta, c.global_rotary_fraction
    else:
        dim, theta, fraction = c.head_dim, c.rope_theta, 1.0
    angles = int(fraction * dim // 2)
    inv_freq = 1.0 / (theta ** (torch.arange(0, 2 * angles, 2, dtype=torch.float32, device=positions.device) / dim))
    inv_freq = torch.cat([inv_freq, inv_freq.new_zeros(dim // 2 - angles)])
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, c: Gemma4Config, ops: Any, i: int) -> None:
        super().__init__()
        self.width, self.kv_heads = c.head(i)
        self.heads = c.num_heads
        self.owner = not c.shared(i)
        self.q_proj = ops.Linear(c.hidden_size, c.num_heads * self.width, bias=False)
        self.q_norm = RMSNorm(self.width, c.rms_norm_eps)
        if self.owner:
            self.k_proj = ops.Linear(c.hidden_size, self.kv_heads * self.width, bias=False)
            if not (c.k_eq_v and c.layer_types[i] == FULL):
                self.v_proj = ops.Linear(c.hidden_size, self.kv_heads * self.width, bias=False)
            self.k_norm = RMSNorm(self.width, c.rms_norm_eps)
            self.v_norm = RMSNorm(self.width, c.rms_norm_eps, scale=False)
        self.o_proj = ops.Linear(c.num_heads * self.width, c.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
                kv: KV | None, cache: list | None = None, keep: int | None = None) -> tuple[torch.Tensor, KV]:
        """(output, the keys and values used, each [B, kv heads, keys, width]).

        ``kv``: another layer's keys and values (a shared layer), else they are computed from ``x`` and
        appended to the one-item ``cache`` list, which then keeps only the last ``keep`` of them.
        """
        b, n, _ = x.shape
        cos, sin = rope[0].unsqueeze(-2), rope[1].unsqueeze(-2)
        q = rotate(self.q_norm(self.q_proj(x).view(b, n, -1, self.width)), cos, sin)
        if kv is None:
            k = self.k_proj(x).view(b, n, -1, self.width)
            v = self.v_proj(x).view(b, n, -1, self.width) if hasattr(self, "v_proj") else k
            k = rotate(self.k_norm(k), cos, sin).transpose(1, 2)
            kv = (k, self.v_norm(v).transpose(1, 2))
            if cache is not None:
                if cache:
                    kv = (torch.cat([cache[0][0], kv[0]], dim=2), torch.cat([cache[0][1], kv[1]], dim=2))
                start = 0 if keep is None else max(kv[0].shape[2] - keep, 0)
                cache[:] = [(kv[0][:, :, start:], kv[1][:, :, start:])]
        k, v = kv
        repeat = self.heads // k.shape[1]
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.repeat_interleave(repeat, dim=1),
                                             v.repeat_interleave(repeat, dim=1), attn_mask=mask, scale=1.0)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1)), kv


class MLP(nn.Module):
    def __init__(self, c: Gemma4Config, ops: Any, i: int) -> None:
        super().__init__()
        width = c.intermediate_size * (2 if c.double_wide_mlp and c.shared(i) else 1)
        self.gate_proj = ops.Linear(c.hidden_size, width, bias=False)
        self.up_proj = ops.Linear(c.hidden_size, width, bias=False)
        self.down_proj = ops.Linear(width, c.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c: Gemma4Config, ops: Any, i: int) -> None:
        super().__init__()
        self.kind = c.layer_types[i]
        self.self_attn = Attention(c, ops, i)
        self.mlp = MLP(c, ops, i)
        for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            setattr(self, name, RMSNorm(c.hidden_size, c.rms_norm_eps))
        if c.per_layer_width:
            self.per_layer_input_gate = ops.Linear(c.hidden_size, c.per_layer_width, bias=False)
            self.per_layer_projection = ops.Linear(c.per_layer_width, c.hidden_size, bias=False)
            self.post_per_layer_input_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.layer_scalar = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
                kv: KV | None, per_layer: torch.Tensor | None = None, cache: list | None = None,
                keep: int | None = None) -> tuple[torch.Tensor, KV]:
        attn, kv = self.self_attn(self.input_layernorm(x), rope, mask, kv, cache, keep)
        x = x + self.post_attention_layernorm(attn)
        x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        if per_layer is not None:
            gated = F.gelu(self.per_layer_input_gate(x), approximate="tanh") * per_layer
            x = x + self.post_per_layer_input_norm(self.per_layer_projection(gated))
        return x * self.layer_scalar.to(x.dtype), kv


class Model(nn.Module):
    def __init__(self, c: Gemma4Config, ops: Any) -> None:
        super().__init__()
        self.embed_tokens = ops.Embedding(c.vocab_size, c.hidden_size)
        if c.per_layer_width:
            self.embed_tokens_per_layer = ops.Embedding(c.per_layer_vocab_size, c.num_layers * c.per_layer_width)
            self.per_layer_model_projection = ops.Linear(c.hidden_size, c.num_layers * c.per_layer_width, bias=False)
            self.per_layer_projection_norm = RMSNorm(c.per_layer_width, c.rms_norm_eps)
        self.layers = nn.ModuleList(Layer(c, ops, i) for i in range(c.num_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


def _lookup(table: nn.Module, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return table(ids, dtype=dtype) if isinstance(table, _ops.CastEmbedding) else table(ids).to(dtype)


class Gemma4LM(nn.Module):
    """Embeddings in, hidden states or next-token scores out (the API of :class:`.decoder.DecoderLM` that the
    text encoders and generate.py use)."""

    def __init__(self, config: Gemma4Config, ops: Any = _ops.plain, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = config
        self.compute_dtype = compute_dtype
        self.model = Model(config, ops)
        if config.lm_head:
            self.lm_head = ops.Linear(config.hidden_size, config.vocab_size, bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.model.norm.weight.dtype

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Unscaled token embeddings [..., D] in the compute dtype.

        With per-layer inputs the ids' rows of the per-layer table follow in ``layers x per_layer_width``
        more channels ([..., D + layers * P]): the other methods take embeddings, not ids, and split them
        off again. Embeddings without them (an image's, [..., D]) get the projected part alone, as in
        Hugging Face's model when it has no ids.
        """
        rows = _lookup(self.model.embed_tokens, ids, self.dtype)
        if not self.config.per_layer_width:
            return rows
        return torch.cat([rows, _lookup(self.model.embed_tokens_per_layer, ids, self.dtype)], dim=-1)

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, hidden_layer: int | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(final normed hidden state, state after layer ``hidden_layer`` or None), as DecoderLM's."""
        outputs = self._run(embeds, attention_mask, positions)
        hidden = None if hidden_layer is None else outputs[hidden_layer % len(outputs)]
        return self.model.norm(outputs[-1]), hidden

    def all_states(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, layers + 1, L, D]: the scaled embeddings, every layer's output but the last, the final normed state
        (Hugging Face's ``hidden_states``)."""
        outputs = self._run(embeds, attention_mask, None)
        return torch.stack([self._scaled(embeds)] + outputs[:-1] + [self.model.norm(outputs[-1])], dim=1)

    def step(self, embeds: torch.Tensor, attention_mask: torch.Tensor, cache: list[list],
             positions: torch.Tensor | None = None) -> torch.Tensor:
        """Generation with a key/value cache: the final normed states of the new tokens ``embeds``.

        ``attention_mask`` [B, past + n] covers the earlier tokens and these (0 hides padding); positions
        continue from the past unless given ([B, n]; of multimodal [3, B, n] the first row). ``cache``
        holds one list per layer (start with empty ones), extended in place; a sliding layer keeps only
        the keys a later token can still see, and a shared layer's list stays empty (it reads its source's).
        """
        return self.model.norm(self._run(embeds, attention_mask, positions, cache)[-1])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 next-token scores of hidden states [..., D], by ``lm_head`` or the tied token embeddings,
        soft-capped when the config has a cap."""
        owner = self.lm_head if self.config.lm_head else self.model.embed_tokens
        weight = owner.weight
        if weight.dtype in _ops.FP8:
            weight = weight.to(self.dtype)
        elif weight.dtype in (torch.int8, torch.uint8):  # packed NVFP4 / int8 (ComfyUI's mixed files)
            weight = _ops.cast_weight(owner, "weight", torch.empty((), dtype=self.dtype, device=weight.device))
        scores = F.linear(hidden.to(device=weight.device, dtype=weight.dtype), weight).float()
        cap = self.config.final_softcap
        return torch.tanh(scores / cap) * cap if cap is not None else scores

    def _scaled(self, embeds: torch.Tensor) -> torch.Tensor:
        """The main embeddings in the compute dtype, scaled by sqrt(width) (rounded to that dtype)."""
        c = self.config
        return embeds[..., :c.hidden_size].to(self.dtype) * torch.tensor(c.hidden_size ** 0.5, dtype=self.dtype)

    def _per_layer_inputs(self, x: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor | None:
        """[B, L, layers, P]: the normed projection of the scaled embeddings ``x``, averaged (times sqrt 2)
        with the scaled per-layer token rows packed in ``embeds`` when it has them."""
        c, m = self.config, self.model
        if not c.per_layer_width:
            return None
        shape = (*x.shape[:-1], c.num_layers, c.per_layer_width)
        projected = m.per_layer_projection_norm((m.per_layer_model_projection(x) * c.hidden_size ** -0.5).view(shape))
        if embeds.shape[-1] == c.hidden_size:
            return projected
        rows = embeds[..., c.hidden_size:].to(x.dtype) * torch.tensor(c.per_layer_width ** 0.5, dtype=x.dtype)
        return (projected + rows.reshape(shape)) * 2 ** -0.5

    def _run(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor | None,
             cache: list[list] | None = None) -> list[torch.Tensor]:
        """Every layer's output for the new tokens ``embeds`` (after ``attention_mask.shape[1] - n`` cached
        ones when there is a cache)."""
        c = self.config
        x = self._scaled(embeds)
        per_layer = self._per_layer_inputs(x, embeds)
        n = x.shape[1]
        past = attention_mask.shape[1] - n if attention_mask is not None and cache is not None else 0
        if positions is None:
            positions = torch.arange(past, past + n, device=x.device)
        elif positions.ndim == 3:
            positions = positions[0]
        ropes = {kind: rotary_tables(c, kind, positions.to(x.device), x.dtype) for kind in (SLIDING, FULL)}
        masks: dict[tuple[str, int], torch.Tensor] = {}
        kept: dict[int, KV] = {}
        outputs = []
        for i, layer in enumerate(self.model.layers):
            source = c.source(i)
            own = cache[i] if cache is not None and source == i else None
            keys = kept[source][0].shape[2] if source != i else n + (own[0][0].shape[2] if own else 0)
            if (layer.kind, keys) not in masks:
                masks[layer.kind, keys] = self._mask(layer.kind, past, n, keys, attention_mask, x.device)
            x, kv = layer(x, ropes[layer.kind], masks[layer.kind, keys], kept.get(source) if source != i else None,
                          None if per_layer is None else per_layer[:, :, i], own,
                          c.sliding_window - 1 if layer.kind == SLIDING else None)
            if source == i:
                kept[i] = kv
            outputs.append(x)
        return outputs

    def _mask(self, kind: str, past: int, n: int, keys: int, attention_mask: torch.Tensor | None,
              device: torch.device) -> torch.Tensor:
        """Which of the last ``keys`` positions each of the ``n`` new ones sees: causal, within the last
        ``sliding_window`` for a sliding layer, and not padding (a padded token still sees itself, so no
        row is empty)."""
        q = torch.arange(past, past + n, device=device)[:, None]
        k = torch.arange(past + n - keys, past + n, device=device)[None, :]
        seen = k <= q
        if kind == SLIDING:
            seen = seen & (k > q - self.config.sliding_window)
        if attention_mask is not None:
            valid = attention_mask[:, past + n - keys:].to(device=device, dtype=torch.bool)[:, None, None, :]
            seen = seen & (valid | (k == q))
        return seen
