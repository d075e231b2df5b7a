"""T5 v1.1's encoder (T5-XXL for Flux, SD3, HiDream, Chroma; umt5-xxl for Wan), its tokenizer, prompt encoding.

Module names follow the Hugging Face / original layout (``shared``,
``encoder.block.N.layer.0.SelfAttention.q``, ``encoder.final_layer_norm`` ...),
the names the text encoder files use, so a state dict loads without renaming.
The layout is read from the keys (width, feed-forward width, heads of 64
channels, depth), so T5-XXL, T5-XL and T5-base files all load.

Relative position buckets are shared by every layer (computed by the first
one) in T5 v1.1; umt5 gives every layer its own table (read from the keys); there is no 1/sqrt(d) attention scaling (T5 folds it into the weights).
fp16 activations are clamped to the fp16 range as the reference
implementation does, so fp16 GPUs do not produce infinities.

Prompts use ComfyUI's syntax (weights, ``embedding:`` names) through
:mod:`.clip.prompt`; T5 gets one sequence: the tokens, the end token (1),
padding (0) up to ``min_length`` (256 for Flux, 77 for SD3).
"""

from __future__ import annotations

import functools
import gzip
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..model import ops as _ops

TOKENIZER_FILE = Path(__file__).with_name("t5data") / "tokenizer.json.gz"
END_TOKEN = 1
PAD_TOKEN = 0
HEAD_DIM = 64

Shapes = dict[str, tuple[int, ...]]

#: Where files keep a T5 encoder: bare, ComfyUI's model keys, inside checkpoints.
T5_PREFIXES = ("", "t5xxl.transformer.", "text_encoders.t5xxl.transformer.", "cond_stage_model.t5xxl.transformer.",
               "t5xl.transformer.", "text_encoders.t5xl.transformer.", "text_encoder_3.")


@dataclass(frozen=True)
class T5Config:
    vocab_size: int = 32128
    width: int = 4096
    ff_width: int = 10240
    heads: int = 64
    layers: int = 24
    gated: bool = True
    eps: float = 1e-6
    buckets: int = 32
    max_distance: int = 128
    #: umt5: every layer has its own relative position table (T5 v1.1: the first layer's is shared)
    per_layer_bias: bool = False

    @property
    def inner(self) -> int:
        return self.heads * HEAD_DIM


def _block_count(shapes: Shapes, prefix: str) -> int:
    rx = re.compile(re.escape(prefix) + r"encoder\.block\.(\d+)\.")
    return len({int(m.group(1)) for k in shapes if (m := rx.match(k))})


def t5_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps a T5 encoder, or None."""
    for prefix in T5_PREFIXES:
        if prefix + "encoder.block.0.layer.0.SelfAttention.q.weight" in shapes \
                and prefix + "encoder.final_layer_norm.weight" in shapes:
            return prefix
    return None


def t5_config(shapes: Shapes, prefix: str) -> T5Config:
    """The encoder's layout from its tensor shapes."""
    embed = shapes.get(prefix + "shared.weight") or shapes.get(prefix + "encoder.embed_tokens.weight")
    inner, width = shapes[prefix + "encoder.block.0.layer.0.SelfAttention.q.weight"]
    gated = prefix + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
    wi = "wi_0" if gated else "wi"
    ff = shapes[prefix + f"encoder.block.0.layer.1.DenseReluDense.{wi}.weight"][0]
    buckets = shapes[prefix + "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][0]
    per_layer = prefix + "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in shapes
    return T5Config(vocab_size=int(embed[0]) if embed else 32128, width=int(width), ff_width=int(ff),
                    heads=int(inner) // HEAD_DIM, layers=_block_count(shapes, prefix), gated=gated,
                    buckets=int(buckets), per_layer_bias=per_layer)


def relative_position_bucket(relative: torch.Tensor, buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """T5's bidirectional buckets: exact for small offsets, logarithmic up to ``max_distance``."""
    half = buckets // 2
    out = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    log_bucket = exact + (torch.log(distance.float() / exact) / math.log(max_distance / exact)
                          * (half - exact)).long()
    log_bucket = torch.clamp(log_bucket, max=half - 1)
    return out + torch.where(distance < exact, distance, log_bucket)


def _clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.float16:
        limit = torch.finfo(torch.float16).max - 1000
        return torch.clamp(x, -limit, limit)
    return x


def _lookup(table: nn.Module, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Rows of an embedding table in ``dtype``, by calling it (so a streamed table is moved in first)."""
    if isinstance(table, _ops.CastEmbedding):
        return table(ids, dtype)
    return table(ids).to(dtype)


class T5LayerNorm(nn.Module):
    """RMS norm without mean subtraction or bias."""

    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps).to(x.dtype)
        return normed * _ops.cast_weight(self, "weight", normed)


class T5Attention(nn.Module):
    def __init__(self, cfg: T5Config, has_bias: bool, ops: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.q = ops.Linear(cfg.width, cfg.inner, bias=False)
        self.k = ops.Linear(cfg.width, cfg.inner, bias=False)
        self.v = ops.Linear(cfg.width, cfg.inner, bias=False)
        self.o = ops.Linear(cfg.inner, cfg.width, bias=False)
        if has_bias:
            self.relative_attention_bias = ops.Embedding(cfg.buckets, cfg.heads)

    def position_bias(self, length: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
        """[1, heads, length, length] additive attention bias of the relative positions."""
        pos = torch.arange(length, device=device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.cfg.buckets, self.cfg.max_distance)
        return _lookup(self.relative_attention_bias, buckets, dtype).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        heads = self.cfg.heads
        q, k, v = (p(x).view(b, n, heads, HEAD_DIM).transpose(1, 2) for p in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)
        return self.o(out.transpose(1, 2).reshape(b, n, heads * HEAD_DIM))


class T5LayerSelfAttention(nn.Module):
    def __init__(self, cfg: T5Config, has_bias: bool, ops: Any) -> None:
        super().__init__()
        self.SelfAttention = T5Attention(cfg, has_bias, ops)
        self.layer_norm = T5LayerNorm(cfg.width, cfg.eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return _clamp_fp16(x + self.SelfAttention(self.layer_norm(x), bias))


class T5DenseGatedActDense(nn.Module):
    def __init__(self, cfg: T5Config, ops: Any) -> None:
        super().__init__()
        self.wi_0 = ops.Linear(cfg.width, cfg.ff_width, bias=False)
        self.wi_1 = ops.Linear(cfg.width, cfg.ff_width, bias=False)
        self.wo = ops.Linear(cfg.ff_width, cfg.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))


class T5DenseActDense(nn.Module):
    def __init__(self, cfg: T5Config, ops: Any) -> None:
        super().__init__()
        self.wi = ops.Linear(cfg.width, cfg.ff_width, bias=False)
        self.wo = ops.Linear(cfg.ff_width, cfg.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(F.relu(self.wi(x)))


class T5LayerFF(nn.Module):
    def __init__(self, cfg: T5Config, ops: Any) -> None:
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(cfg, ops) if cfg.gated else T5DenseActDense(cfg, ops)
        self.layer_norm = T5LayerNorm(cfg.width, cfg.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _clamp_fp16(x + self.DenseReluDense(self.layer_norm(x)))


class T5Block(nn.Module):
    def __init__(self, cfg: T5Config, first: bool, ops: Any) -> None:
        super().__init__()
        self.layer = nn.ModuleList([T5LayerSelfAttention(cfg, first, ops), T5LayerFF(cfg, ops)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.layer[1](self.layer[0](x, bias))


class T5Stack(nn.Module):
    def __init__(self, cfg: T5Config, ops: Any) -> None:
        super().__init__()
        self.block = nn.ModuleList(T5Block(cfg, i == 0 or cfg.per_layer_bias, ops) for i in range(cfg.layers))
        self.final_layer_norm = T5LayerNorm(cfg.width, cfg.eps)


class T5Encoder(nn.Module):
    """The encoder half of T5; ``forward`` takes input embeddings (prompt vectors may replace tokens)."""

    def __init__(self, cfg: T5Config | None = None, ops: Any = _ops.manual_cast) -> None:
        super().__init__()
        self.cfg = cfg or T5Config()
        self.shared = ops.Embedding(self.cfg.vocab_size, self.cfg.width)
        self.encoder = T5Stack(self.cfg, ops)

    @property
    def device(self) -> torch.device:
        return self.encoder.final_layer_norm.weight.device

    def embed(self, chunks: list[list[tuple[Any, float]]], dtype: torch.dtype = torch.float32,
              device: Any = None) -> torch.Tensor:
        """Input embeddings [B, n, width] on ``device`` (default: the weights'); a chunk entry may be a vector."""
        device = device or self.device
        ids = torch.tensor([[t if isinstance(t, int) else 0 for t, _ in c] for c in chunks], dtype=torch.long)
        x = _lookup(self.shared, ids.to(device), dtype)
        for b, chunk in enumerate(chunks):
            for i, (t, _) in enumerate(chunk):
                if not isinstance(t, int):
                    x[b, i] = t.to(device=x.device, dtype=dtype)
        return torch.nan_to_num(x)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                layer_idx: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(final normed states, states of layer ``layer_idx`` normed, or None) of embeddings ``x``."""
        keep = None
        if attention_mask is not None:
            keep = attention_mask.to(device=x.device, dtype=torch.bool)[:, None, None, :]

        def position_bias(block: nn.Module) -> torch.Tensor:
            bias = block.layer[0].SelfAttention.position_bias(x.shape[1], x.device, x.dtype)
            return bias if keep is None else bias.masked_fill(~keep, -torch.finfo(x.dtype).max)

        bias = position_bias(self.encoder.block[0])
        pick = None if layer_idx is None else (layer_idx if layer_idx >= 0 else len(self.encoder.block) + layer_idx)
        hidden = None
        for i, block in enumerate(self.encoder.block):
            if i and self.cfg.per_layer_bias:
                bias = position_bias(block)
            x = block(x, bias)
            if i == pick:
                hidden = x
        x = self.encoder.final_layer_norm(x)
        if hidden is not None:
            hidden = self.encoder.final_layer_norm(hidden)
        return x, hidden


class T5Tokenizer:
    """Text to T5 token ids (SentencePiece unigram through the ``tokenizers`` library), without the end token."""

    def __init__(self, path: Path = TOKENIZER_FILE) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(gzip.decompress(path.read_bytes()).decode("utf-8"))

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids)


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> T5Tokenizer:
    return T5Tokenizer()


def tokenize_t5(text: str, min_length: int | None = 256, embedding_dir: Any = None, width: int = 4096,
                min_padding: int | None = None, disable_weights: bool = False,
                tokenizer: Any = None) -> list[list[tuple[Any, float]]]:
    """One sequence of (token, weight): the prompt's tokens, the end token, padding to ``min_length``.

    ``tokenizer`` (anything with ``encode(text) -> ids``) replaces T5 v1.1's, e.g. umt5's SentencePiece model.
    """
    from .clip.prompt import _piece_tokens, parse_weights

    tokenizer = tokenizer or default_tokenizer()
    pieces = [(text, 1.0)] if disable_weights else parse_weights(text)
    chunk: list[tuple[Any, float]] = []
    for piece, weight in pieces:
        for group in _piece_tokens(piece, weight, tokenizer, embedding_dir, width):  # type: ignore[arg-type]
            chunk.extend(group)
    chunk.append((END_TOKEN, 1.0))
    if min_padding:
        chunk.extend([(PAD_TOKEN, 1.0)] * min_padding)
    if min_length is not None and len(chunk) < min_length:
        chunk.extend([(PAD_TOKEN, 1.0)] * (min_length - len(chunk)))
    return [chunk]


def token_mask(chunk: list[tuple[Any, float]]) -> list[int]:
    """1 up to and including the first end token, 0 for the padding after it (ComfyUI's rule)."""
    mask, ended = [], False
    for token, *_ in chunk:
        mask.append(0 if ended else 1)
        if isinstance(token, int) and token == END_TOKEN and not ended:
            ended = True
    return mask


@torch.no_grad()
def encode_t5(model: T5Encoder, chunks: list[list[tuple[Any, float]]], attention_mask: bool = False,
              layer_idx: int | None = None, device: Any = None) -> tuple[torch.Tensor, None, dict[str, torch.Tensor]]:
    """Conditioning [1, n, width] (float32, CPU), no pooled output, and the token mask when asked for.

    Weighted tokens are interpolated against the encoding of an empty prompt of the
    same length (the end token, then padding), as ComfyUI does.
    """
    weighted = any(w != 1.0 for chunk in chunks for _, w, *_ in chunk)
    pairs = [[(p[0], p[1]) for p in chunk] for chunk in chunks]
    batch = list(pairs)
    length = max((len(c) for c in pairs), default=1)
    if weighted or not batch:
        batch.append([(END_TOKEN, 1.0)] + [(PAD_TOKEN, 1.0)] * (length - 1))
    masks = torch.tensor([token_mask(c) for c in batch], dtype=torch.long)
    x = model.embed(batch, device=device)
    out, hidden = model(x, masks if attention_mask else None, layer_idx)
    z_all = (hidden if hidden is not None else out).float()
    outputs = []
    for k, chunk in enumerate(pairs):
        z = z_all[k].clone()
        if weighted:
            empty = z_all[-1]
            for j, (_, w) in enumerate(chunk):
                if w != 1.0:
                    z[j] = (z[j] - empty[j]) * w + empty[j]
        outputs.append(z)
    cond = torch.cat(outputs, dim=0)[None] if outputs else z_all[-1:]
    extra = {"attention_mask": masks[: len(pairs)].flatten()[None]} if attention_mask else {}
    return cond.cpu(), None, extra
