"""CLIP ViT-L/14 text encoder as SD1.x uses it, and ComfyUI's weighted prompt encoding.

Module names follow the Hugging Face CLIP layout (`embeddings.token_embedding`,
`encoder.layers.N.self_attn.q_proj`, `final_layer_norm`, ...), the names the SD1
checkpoints use under `cond_stage_model.transformer.text_model.`, so a state
dict loads without renaming. Weights may stay fp16; all maths runs in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...model.ops import CastEmbedding, CastLayerNorm, CastLinear
from .prompt import CHUNK_LENGTH, WeightedToken, tokenize_prompt
from .tokenizer import END_TOKEN, START_TOKEN


@dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int = 49408
    max_positions: int = 77
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_width: int = 3072
    eps: float = 1e-5
    end_token: int = END_TOKEN
    activation: str = "quick_gelu"
    projection: bool = False


#: OpenCLIP ViT-bigG/14's text tower (SDXL's second encoder).
CLIP_G = CLIPTextConfig(width=1280, layers=32, heads=20, mlp_width=5120, activation="gelu", projection=True)
#: OpenCLIP ViT-H/14's text tower (SD2.x's encoder; its pooled output is not used).
CLIP_H = CLIPTextConfig(width=1024, layers=24, heads=16, mlp_width=4096, activation="gelu")


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


#: the MLP activations of CLIP's text and image towers (and SigLIP's, tanh-approximated), by config name
ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu,
               "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


class CLIPAttention(nn.Module):
    def __init__(self, cfg: CLIPTextConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.q_proj = CastLinear(cfg.width, cfg.width)
        self.k_proj = CastLinear(cfg.width, cfg.width)
        self.v_proj = CastLinear(cfg.width, cfg.width)
        self.out_proj = CastLinear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (p(x).view(b, n, self.heads, c // self.heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class CLIPMLP(nn.Module):
    """fc1, activation, fc2: the MLP of every CLIP layer, text or image (``cfg`` needs ``width``,
    ``mlp_width`` and ``activation``)."""

    def __init__(self, cfg: CLIPTextConfig) -> None:
        super().__init__()
        self.fc1 = CastLinear(cfg.width, cfg.mlp_width)
        self.fc2 = CastLinear(cfg.mlp_width, cfg.width)
        self.act = ACTIVATIONS[cfg.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPLayer(nn.Module):
    def __init__(self, cfg: CLIPTextConfig) -> None:
        super().__init__()
        self.layer_norm1 = CastLayerNorm(cfg.width, eps=cfg.eps)
        self.self_attn = CLIPAttention(cfg)
        self.layer_norm2 = CastLayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = CLIPMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, cfg: CLIPTextConfig) -> None:
        super().__init__()
        self.token_embedding = CastEmbedding(cfg.vocab_size, cfg.width)
        self.position_embedding = CastEmbedding(cfg.max_positions, cfg.width)


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: CLIPTextConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CLIPLayer(cfg) for _ in range(cfg.layers))


class CLIPTextModel(nn.Module):
    """Pre-LayerNorm transformer with a causal mask; padding tokens are attended to, as in training."""

    def __init__(self, cfg: CLIPTextConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or CLIPTextConfig()
        self.embeddings = CLIPEmbeddings(self.cfg)
        self.encoder = CLIPEncoder(self.cfg)
        self.final_layer_norm = CastLayerNorm(self.cfg.width, eps=self.cfg.eps)
        if self.cfg.projection:
            self.text_projection = CastLinear(self.cfg.width, self.cfg.width, bias=False)

    @property
    def device(self) -> torch.device:
        return self.final_layer_norm.weight.device

    def embed(self, chunks: list[list[WeightedToken]], dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings [B, n, width] of token chunks, and the token ids (-1 where a vector was given)."""
        ids = torch.tensor([[t if isinstance(t, int) else -1 for t, _ in c] for c in chunks], dtype=torch.long)
        x = self.embeddings.token_embedding(ids.clamp(min=0).to(self.device), dtype)
        for b, chunk in enumerate(chunks):
            for i, (t, _) in enumerate(chunk):
                if not isinstance(t, int):
                    x[b, i] = t.to(device=x.device, dtype=dtype)
        positions = torch.arange(ids.shape[1], device=self.device)
        return x + self.embeddings.position_embedding(positions, dtype), ids

    def forward(
        self, x: torch.Tensor, ids: torch.Tensor, layer_idx: int | None = None, layer_norm_hidden: bool = True,
        projected_pooled: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states [B, n, width] of the chosen layer and the pooled output [B, width].

        `layer_idx` None or -1 is the last layer; -2 the penultimate (CLIPSetLastLayer);
        an intermediate layer's output goes through the final LayerNorm when
        `layer_norm_hidden` (SD1.x) and not otherwise (SDXL). The pooled output is
        the last layer's normed state at the first end token, projected when the
        encoder has a text projection.
        """
        n_layers = len(self.encoder.layers)
        pick = n_layers - 1
        if layer_idx is not None and abs(layer_idx) <= n_layers:
            pick = layer_idx if layer_idx >= 0 else n_layers + layer_idx
        hidden = None
        for i, layer in enumerate(self.encoder.layers):
            x = layer(x)
            if i == pick:
                hidden = x
        x = self.final_layer_norm(x)
        if pick == n_layers - 1 and layer_idx is None:
            hidden = x
        elif layer_norm_hidden:
            hidden = self.final_layer_norm(hidden)
        end_pos = (ids == self.cfg.end_token).int().argmax(dim=-1).to(x.device)
        pooled = x[torch.arange(x.shape[0], device=x.device), end_pos]
        if projected_pooled and hasattr(self, "text_projection"):
            pooled = self.text_projection(pooled)
        return hidden, pooled


def empty_chunk(length: int = CHUNK_LENGTH, pad_token: int = END_TOKEN) -> list[WeightedToken]:
    """The "empty prompt" sequence that weighted tokens are interpolated against."""
    return [(START_TOKEN, 1.0), (END_TOKEN, 1.0)] + [(pad_token, 1.0)] * (length - 2)


@torch.no_grad()
def encode_chunks(
    model: CLIPTextModel, chunks: list[list[WeightedToken]], layer_idx: int | None = None,
    layer_norm_hidden: bool = True, pad_token: int = END_TOKEN, projected_pooled: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CONDITIONING tensor [1, 77k, width] (float32) and pooled output [1, width] of tokenized chunks.

    When any weight differs from 1 the empty sequence is encoded in the same batch
    and each weighted token becomes empty + (token - empty) * weight, position by position.
    """
    weighted = any(w != 1.0 for chunk in chunks for _, w in chunk)
    batch = list(chunks)
    if weighted or not batch:
        batch.append(empty_chunk(max((len(c) for c in chunks), default=CHUNK_LENGTH), pad_token))
    x, ids = model.embed(batch)
    hidden, pooled = model(x, ids, layer_idx, layer_norm_hidden, projected_pooled)
    hidden = hidden.float()
    outputs = []
    for k, chunk in enumerate(chunks):
        z = hidden[k].clone()
        if weighted:
            empty = hidden[-1]
            for j, (_, w) in enumerate(chunk):
                if w != 1.0:
                    z[j] = (z[j] - empty[j]) * w + empty[j]
        outputs.append(z)
    cond = torch.cat(outputs, dim=0)[None] if outputs else hidden[-1:]
    return cond.cpu(), pooled[:1].float().cpu()


def encode_prompt(
    model: CLIPTextModel,
    text: str,
    layer_idx: int | None = None,
    embedding_dir: Path | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIPTextEncode in one call: tokenize with weights and chunks, then encode.

    Returns the conditioning [1, 77k, 768] and the pooled output [1, 768], float32 on the CPU.
    """
    chunks = tokenize_prompt(text, embedding_dir=embedding_dir, width=model.cfg.width)
    return encode_chunks(model, chunks, layer_idx)
